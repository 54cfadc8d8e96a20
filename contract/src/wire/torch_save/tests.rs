//! The codec against itself and against hostile archives: every refusal happens before any
//! allocation the archive asks for, and names what it refused.

use super::opcodes as op;
use super::zip_writer::ZipWriter;
use super::*;
use crate::wire::dtype::WireDtype;
use crate::wire::layout::ModelLayout;
use crate::wire::safetensors::SafetensorsHeader;

fn limits() -> ReadLimits {
    ReadLimits {
        max_tensor_bytes: 1 << 20,
        ..ReadLimits::default()
    }
}

/// An archive holding `pickle` as data.pkl and the given storage records.
fn archive_with(pickle: &[u8], records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut zip = ZipWriter::new(&mut out);
    zip.entry("archive/data.pkl", pickle);
    zip.entry("archive/byteorder", b"little");
    for (name, data) in records {
        zip.entry(&format!("archive/{name}"), data);
    }
    zip.entry("archive/version", b"3\n");
    zip.close();
    out
}

/// A pickle builder for hand-made (and hostile) pickles.
#[derive(Default)]
struct P(Vec<u8>);

impl P {
    fn new() -> Self {
        P(vec![op::PROTO, 2])
    }
    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn s(self, text: &str) -> Self {
        let mut p = self.raw(&[op::BINUNICODE]);
        p.0.extend_from_slice(&(text.len() as u32).to_le_bytes());
        p.raw(text.as_bytes())
    }
    fn global(self, module: &str, name: &str) -> Self {
        self.raw(&[op::GLOBAL])
            .raw(format!("{module}\n{name}\n").as_bytes())
    }
    fn int(self, v: i64) -> Self {
        let mut p = self.raw(&[op::LONG1, 8]);
        p.0.extend_from_slice(&v.to_le_bytes());
        p
    }
    /// `_rebuild_tensor_v2(storage(class, key, numel), offset, shape, stride, False, {})`.
    fn tensor(
        self,
        class: &str,
        key: &str,
        numel: i64,
        offset: i64,
        shape: &[i64],
        stride: &[i64],
    ) -> Self {
        let mut p = self
            .global("torch._utils", "_rebuild_tensor_v2")
            .raw(&[op::MARK, op::MARK])
            .s("storage")
            .global("torch", class)
            .s(key)
            .s("cpu")
            .int(numel)
            .raw(&[op::TUPLE, op::BINPERSID])
            .int(offset)
            .raw(&[op::MARK]);
        for d in shape {
            p = p.int(*d);
        }
        p = p.raw(&[op::TUPLE, op::MARK]);
        for s in stride {
            p = p.int(*s);
        }
        p.raw(&[op::TUPLE, op::NEWFALSE])
            .global("collections", "OrderedDict")
            .raw(&[op::EMPTY_TUPLE, op::REDUCE, op::TUPLE, op::REDUCE])
    }
    /// `{name: <tensor>}` around a tensor-building closure.
    fn dict_of(self, entries: impl FnOnce(P) -> P) -> Vec<u8> {
        entries(self.raw(&[op::EMPTY_DICT, op::MARK]))
            .raw(&[op::SETITEMS, op::STOP])
            .0
    }
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn read_one(archive: &[u8]) -> Result<Vec<TorchSaveTensor>, TorchSaveError> {
    read_both(archive, &limits())
}

/// The archive read as it streams in `chunk`-byte pieces: its header and data section.
pub(super) fn stream(
    archive: &[u8],
    limits: &ReadLimits,
    chunk: usize,
) -> Result<(SafetensorsHeader, Vec<u8>), TorchSaveError> {
    let mut reader = StreamReader::new(*limits);
    let (mut header, mut data, mut events) = (None, Vec::new(), Vec::new());
    for piece in archive.chunks(chunk.max(1)) {
        reader.push(bytes::Bytes::copy_from_slice(piece), &mut events)?;
        for event in events.drain(..) {
            match event {
                StreamEvent::Planned(planned) => {
                    assert!(header.is_none(), "planned twice");
                    header = Some(planned);
                }
                StreamEvent::Data { offset, bytes } => {
                    assert!(header.is_some(), "data before the plan");
                    assert_eq!(offset, data.len(), "pieces come in order");
                    data.extend_from_slice(&bytes);
                }
            }
        }
    }
    reader.finish()?;
    let header = header.expect("a finished archive was planned");
    assert_eq!(header.data_len, data.len());
    Ok((header, data))
}

/// Reads `archive` whole and as it streams (in pieces of 1, 61 and 4096 bytes, and whole):
/// the streaming reader refuses what the whole reader refuses and reads the same tensors from
/// the rest. The whole reader's result.
pub(super) fn read_both(
    archive: &[u8],
    limits: &ReadLimits,
) -> Result<Vec<TorchSaveTensor>, TorchSaveError> {
    let whole = read(archive, limits);
    for chunk in [1, 61, 4096, archive.len()] {
        let streamed = stream(archive, limits, chunk);
        match (&whole, streamed) {
            (Ok(tensors), Ok((header, data))) => {
                assert_eq!(header, safetensors_header(tensors), "chunk {chunk}");
                let concatenated: Vec<u8> = tensors
                    .iter()
                    .flat_map(|t| t.bytes(archive).to_vec())
                    .collect();
                assert_eq!(data, concatenated, "chunk {chunk}");
            }
            (Err(_), Err(_)) => {}
            (Ok(_), Err(e)) => panic!("streamed in {chunk}-byte pieces: refused ({e})"),
            (Err(e), Ok(_)) => panic!("streamed in {chunk}-byte pieces: read, but whole: {e}"),
        }
    }
    whole
}

#[test]
fn written_archives_read_back_in_every_dtype() {
    let shapes: [&[usize]; 4] = [&[2, 3], &[], &[0, 4], &[5]];
    for dtype in StorageDtype::ALL {
        let data: Vec<Vec<u8>> = shapes
            .iter()
            .map(|s| {
                let n = s.iter().product::<usize>() * dtype.size();
                (0..n).map(|i| (i * 7 + 1) as u8 % 2).collect()
            })
            .collect();
        let names = ["w", "scale", "empty", "b"];
        let tensors: Vec<_> = (0..4)
            .map(|i| TensorToWrite {
                name: names[i],
                dtype,
                shape: shapes[i],
                data: &data[i],
            })
            .collect();
        let archive = write(&tensors);
        let back = read_one(&archive).unwrap();
        assert_eq!(back.len(), 4);
        for (i, t) in back.iter().enumerate() {
            assert_eq!(t.name, names[i]);
            assert_eq!(t.dtype, dtype);
            assert_eq!(t.shape, shapes[i]);
            assert_eq!(t.bytes(&archive), &data[i][..], "{dtype:?} {}", t.name);
            assert!(
                matches!(t.data, TensorBytes::Archive(_)),
                "contiguous: no copy"
            );
        }
    }
}

#[test]
fn storage_data_is_64_byte_aligned_like_torch_save() {
    let layout = ModelLayout::new(vec![("a".into(), vec![3]), ("b".into(), vec![2, 2])]).unwrap();
    let values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
    let archive = encode(&layout, &values, WireDtype::Fp32);
    let back = read_one(&archive).unwrap();
    for t in &back {
        let TensorBytes::Archive(range) = &t.data else {
            panic!("copied")
        };
        assert_eq!(range.start % 64, 0, "{}", t.name);
    }
    assert_eq!(back[1].bytes(&archive), f32_bytes(&[4.0, 5.0, 6.0, 7.0]));
    let header = safetensors_header(&back);
    assert_eq!(header.data_len, 28);
    assert_eq!(header.tensors[1].data, 12..28);
    assert_eq!(header.tensors[1].dtype, "F32");
}

#[test]
fn transposed_sliced_and_shared_views_are_gathered() {
    let storage = f32_bytes(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let pickle = P::new().dict_of(|p| {
        p.s("t") // the transpose of a 2x3 matrix
            .tensor("FloatStorage", "0", 6, 0, &[3, 2], &[1, 3])
            .s("row") // its second row: a view with an offset
            .tensor("FloatStorage", "0", 6, 3, &[3], &[1])
            .s("col") // a column: strided
            .tensor("FloatStorage", "0", 6, 1, &[2], &[3])
            .s("zero_d")
            .tensor("FloatStorage", "0", 6, 5, &[], &[])
    });
    let archive = archive_with(&pickle, &[("data/0", &storage)]);
    let back = read_one(&archive).unwrap();
    let values = |t: &TorchSaveTensor| -> Vec<f32> {
        t.bytes(&archive)
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    };
    assert_eq!(values(&back[0]), [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    assert!(matches!(back[0].data, TensorBytes::Gathered(_)));
    assert_eq!(values(&back[1]), [3.0, 4.0, 5.0]);
    assert!(matches!(back[1].data, TensorBytes::Archive(_)));
    assert_eq!(values(&back[2]), [1.0, 4.0]);
    assert_eq!(values(&back[3]), [5.0]);
    assert_eq!(back[3].shape, Vec::<usize>::new());
}

fn refused_global(archive: &[u8]) -> String {
    match read_one(archive) {
        Err(TorchSaveError::RefusedGlobal(name)) => name,
        other => panic!("expected a refused global, got {other:?}"),
    }
}

#[test]
fn os_system_is_refused_by_name() {
    let pickle = P::new()
        .global("os", "system")
        .s("touch /tmp/pwned")
        .raw(&[op::TUPLE1, op::REDUCE, op::STOP])
        .0;
    let archive = archive_with(&pickle, &[]);
    assert_eq!(refused_global(&archive), "os.system");
    let error = read_one(&archive).unwrap_err();
    assert!(error.is_refused_construct());
    assert!(error.to_string().contains("os.system"), "{error}");
}

#[test]
fn a_refused_global_is_named_escaped_and_cut_short() {
    let long = format!("evil\nINFO forged log line {}", "x".repeat(10_000));
    let pickle = P::new()
        .s(&long)
        .s("run")
        .raw(&[op::STACK_GLOBAL, op::STOP])
        .0;
    let name = refused_global(&archive_with(&pickle, &[]));
    assert!(
        name.starts_with("evil\\nINFO forged log line xxx"),
        "{name}"
    );
    assert!(!name.contains('\n'));
    assert!(name.ends_with("….run"), "{}", &name[name.len() - 20..]);
    assert!(name.chars().count() < 300, "{} chars", name.chars().count());
}

#[test]
fn builtins_eval_is_refused_also_through_stack_global() {
    let pickle = P::new()
        .s("builtins")
        .s("eval")
        .raw(&[op::STACK_GLOBAL])
        .s("1+1")
        .raw(&[op::TUPLE1, op::REDUCE, op::STOP])
        .0;
    assert_eq!(refused_global(&archive_with(&pickle, &[])), "builtins.eval");
    // A torch global that is not a storage class is refused too.
    let pickle = P::new().global("torch", "load").raw(&[op::STOP]).0;
    assert_eq!(refused_global(&archive_with(&pickle, &[])), "torch.load");
}

#[test]
fn opcodes_outside_the_allowlist_are_refused_by_name() {
    // A nested pickle travels as bytes: BINBYTES is never needed by a state dict.
    let mut nested = P::new().raw(&[op::EMPTY_DICT, b'B']);
    nested.0.extend_from_slice(&4u32.to_le_bytes());
    let nested = nested.raw(b"\x80\x02N.").raw(&[op::STOP]).0;
    for (pickle, name) in [
        (nested, "BINBYTES"),
        (P::new().raw(b"]").raw(&[op::STOP]).0, "EMPTY_LIST"),
        (P::new().raw(b"i").0, "INST"),
        (P::new().raw(&[0x81]).0, "NEWOBJ"),
        (P::new().raw(&[0xff]).0, "0xff (no pickle opcode)"),
    ] {
        let error = read_one(&archive_with(&pickle, &[])).unwrap_err();
        match &error {
            TorchSaveError::RefusedOpcode { opcode, .. } => assert_eq!(opcode, name),
            other => panic!("{name}: {other:?}"),
        }
        assert!(error.to_string().contains(name), "{error}");
    }
}

#[test]
fn storage_classes_cannot_be_called() {
    let pickle = P::new()
        .global("torch", "FloatStorage")
        .raw(&[op::EMPTY_TUPLE, op::REDUCE, op::STOP])
        .0;
    assert!(refused_global(&archive_with(&pickle, &[])).contains("FloatStorage"));
}

#[test]
fn a_persistent_id_to_a_missing_record_is_refused() {
    let pickle = P::new().dict_of(|p| p.s("w").tensor("FloatStorage", "7", 2, 0, &[2], &[1]));
    let archive = archive_with(&pickle, &[("data/0", &f32_bytes(&[1.0, 2.0]))]);
    let error = read_one(&archive).unwrap_err();
    assert!(
        matches!(&error, TorchSaveError::Container(m) if m.contains("data/7")),
        "{error}"
    );
    // Keys are record names, not paths.
    let pickle = P::new().dict_of(|p| p.s("w").tensor("FloatStorage", "../0", 2, 0, &[2], &[1]));
    let archive = archive_with(&pickle, &[("data/0", &f32_bytes(&[1.0, 2.0]))]);
    assert!(matches!(read_one(&archive), Err(TorchSaveError::Pickle(_))));
}

#[test]
fn storage_sizes_that_disagree_with_the_record_are_refused_before_allocating() {
    for numel in [1i64 << 60, i64::MAX, 3, -1] {
        let pickle =
            P::new().dict_of(|p| p.s("w").tensor("FloatStorage", "0", numel, 0, &[2], &[1]));
        let archive = archive_with(&pickle, &[("data/0", &f32_bytes(&[1.0, 2.0]))]);
        assert!(read_one(&archive).is_err(), "numel {numel}");
    }
}

#[test]
fn views_past_their_storage_are_refused() {
    for (offset, shape, stride) in [
        (1, vec![2], vec![1]),
        (0, vec![3], vec![1]),
        (0, vec![2, 2], vec![1, 1 << 40]),
        (0, vec![1 << 62, 4], vec![0, 0]),
        (0, vec![2], vec![-1]),
        (5, vec![0], vec![1]),
    ] {
        let pickle = P::new().dict_of(|p| {
            p.s("w")
                .tensor("FloatStorage", "0", 2, offset, &shape, &stride)
        });
        let archive = archive_with(&pickle, &[("data/0", &f32_bytes(&[1.0, 2.0]))]);
        assert!(read_one(&archive).is_err(), "{offset} {shape:?} {stride:?}");
    }
}

#[test]
fn broadcast_views_are_held_to_the_byte_limit_before_gathering() {
    // One element viewed 2^20 x 2^20 times (stride 0): 4 TiB if gathered.
    let pickle = P::new().dict_of(|p| {
        p.s("w")
            .tensor("FloatStorage", "0", 1, 0, &[1 << 20, 1 << 20], &[0, 0])
    });
    let archive = archive_with(&pickle, &[("data/0", &f32_bytes(&[1.0]))]);
    assert!(matches!(
        read_one(&archive),
        Err(TorchSaveError::TooLarge { declared, limit: 1048576 }) if declared == 1 << 42
    ));
}

#[test]
fn duplicate_keys_and_non_tensor_values_are_refused() {
    let storage = f32_bytes(&[1.0]);
    let pickle = P::new().dict_of(|p| {
        p.s("w")
            .tensor("FloatStorage", "0", 1, 0, &[1], &[1])
            .s("w")
            .tensor("FloatStorage", "0", 1, 0, &[1], &[1])
    });
    assert!(read_one(&archive_with(&pickle, &[("data/0", &storage)])).is_err());
    let pickle = P::new().dict_of(|p| p.s("w").int(3));
    assert!(matches!(
        read_one(&archive_with(&pickle, &[])),
        Err(TorchSaveError::Pickle(_))
    ));
}

#[test]
fn truncated_and_memo_abusing_pickles_are_refused() {
    let good = P::new().dict_of(|p| p.s("w").tensor("FloatStorage", "0", 1, 0, &[1], &[1]));
    let storage = f32_bytes(&[1.0]);
    for cut in 0..good.len() {
        assert!(read_one(&archive_with(&good[..cut], &[("data/0", &storage)])).is_err());
    }
    let memo = P::new().raw(&[op::BINGET, 9, op::STOP]).0;
    assert!(matches!(
        read_one(&archive_with(&memo, &[])),
        Err(TorchSaveError::Pickle(_))
    ));
    // A string longer than the pickle is refused without allocating its claimed length.
    let mut huge = P::new().raw(&[op::BINUNICODE]);
    huge.0.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        read_one(&archive_with(&huge.0, &[])),
        Err(TorchSaveError::Pickle(_))
    ));
}

#[test]
fn pickles_of_many_tiny_objects_are_held_to_the_value_limit() {
    // One byte per EMPTY_TUPLE would be ~40 bytes each in memory: bounded by count instead.
    let mut pickle = P::new().0;
    pickle.extend(std::iter::repeat_n(op::EMPTY_TUPLE, 10_000));
    let archive = archive_with(&pickle, &[]);
    let tight = ReadLimits {
        max_pickle_values: 1000,
        ..limits()
    };
    let error = read_both(&archive, &tight).unwrap_err();
    assert!(
        error.to_string().contains("more than 1000 values"),
        "{error}"
    );
}

#[test]
fn big_endian_archives_are_refused() {
    let pickle = P::new().dict_of(|p| p);
    let mut out = Vec::new();
    let mut zip = ZipWriter::new(&mut out);
    zip.entry("archive/data.pkl", &pickle);
    zip.entry("archive/byteorder", b"big");
    zip.close();
    assert!(matches!(read_one(&out), Err(TorchSaveError::Container(_))));
}

fn container_error(archive: &[u8]) -> String {
    match read_one(archive) {
        Err(TorchSaveError::Container(m)) => m,
        other => panic!("expected a container error, got {other:?}"),
    }
}

#[test]
fn duplicate_and_escaping_entry_names_are_refused() {
    let pickle = P::new().dict_of(|p| p);
    let mut out = Vec::new();
    let mut zip = ZipWriter::new(&mut out);
    zip.entry("archive/data.pkl", &pickle);
    zip.entry("archive/data.pkl", &pickle);
    zip.close();
    assert!(container_error(&out).contains("twice"));
    for name in [
        "archive/../etc/passwd",
        "/archive/data.pkl",
        "archive/./x",
        "archive\\x",
        "other/x",
    ] {
        let mut out = Vec::new();
        let mut zip = ZipWriter::new(&mut out);
        zip.entry("archive/data.pkl", &pickle);
        zip.entry(name, b"x");
        zip.close();
        container_error(&out);
    }
}

/// The offset of the central directory and of the zip64 end record in a written archive.
fn directory_of(archive: &[u8]) -> (usize, usize) {
    let end = archive.len() - 22;
    let locator = end - 20;
    let record =
        u64::from_le_bytes(archive[locator + 8..locator + 16].try_into().unwrap()) as usize;
    let start = u64::from_le_bytes(archive[record + 48..record + 56].try_into().unwrap()) as usize;
    (start, record)
}

#[test]
fn compressed_entries_are_refused_so_nothing_is_ever_inflated() {
    let archive = write(&[TensorToWrite {
        name: "w",
        dtype: StorageDtype::F32,
        shape: &[1],
        data: &f32_bytes(&[1.0]),
    }]);
    let (start, _) = directory_of(&archive);
    let mut deflated = archive.clone();
    deflated[start + 10] = 8; // method: deflate
    assert!(container_error(&deflated).contains("compressed"));
}

#[test]
fn zip64_lies_are_refused() {
    let archive = write(&[TensorToWrite {
        name: "w",
        dtype: StorageDtype::F32,
        shape: &[2],
        data: &f32_bytes(&[1.0, 2.0]),
    }]);
    assert!(read_one(&archive).is_ok());
    let (start, record) = directory_of(&archive);
    // The end record's 32-bit fields say "see zip64", so only the zip64 values count.
    let end = archive.len() - 22;
    let mut deferred = archive.clone();
    deferred[end + 8..end + 12].copy_from_slice(&[0xff; 4]);
    deferred[end + 12..end + 20].copy_from_slice(&[0xff; 8]);
    assert!(read_one(&deferred).is_ok());
    let patch = |at: usize, value: u64| {
        let mut a = deferred.clone();
        a[at..at + 8].copy_from_slice(&value.to_le_bytes());
        a
    };
    let both_sizes = |value: u64| {
        let at = start + 46 + "archive/data.pkl".len() + 4;
        let mut a = patch(at, value);
        a[at + 8..at + 16].copy_from_slice(&value.to_le_bytes());
        a
    };
    let locator = archive.len() - 22 - 20;
    for (what, lie) in [
        ("entry count", patch(record + 32, 1 << 40)),
        ("directory size", patch(record + 40, 1 << 50)),
        ("directory offset", patch(record + 48, u64::MAX)),
        ("record offset", patch(locator + 8, 1 << 62)),
        (
            "record offset inside the directory",
            patch(locator + 8, start as u64),
        ),
        // The first entry's zip64 size: far past the body.
        ("entry size", both_sizes(1 << 60)),
        ("entry size past the directory", both_sizes(600)),
        (
            "entry sizes disagree",
            patch(start + 46 + "archive/data.pkl".len() + 4, 100),
        ),
        (
            "entry offset",
            patch(start + 46 + "archive/data.pkl".len() + 20, 1 << 60),
        ),
    ] {
        let error = container_error(&lie);
        eprintln!("{what}: {error}");
    }
    // A comment after the end record (where a second archive could hide) is refused.
    let mut commented = archive.clone();
    commented.extend_from_slice(b"hi");
    assert!(read_one(&commented).is_err());
    assert!(read_one(b"PK\x05\x06").is_err());
    assert!(read_one(b"").is_err());
}

#[test]
fn overlapping_entries_are_refused() {
    let archive = write(&[TensorToWrite {
        name: "w",
        dtype: StorageDtype::F32,
        shape: &[2],
        data: &f32_bytes(&[1.0, 2.0]),
    }]);
    let (start, _) = directory_of(&archive);
    // Grow the first entry (data.pkl) so that it runs into the second one's header.
    let sizes = start + 46 + "archive/data.pkl".len() + 4;
    let mut overlap = archive.clone();
    for at in [sizes, sizes + 8] {
        overlap[at..at + 8].copy_from_slice(&300u64.to_le_bytes());
    }
    let error = container_error(&overlap);
    assert!(error.contains("overlap"), "{error}");
}

#[test]
fn the_entry_limit_is_applied_before_reading_the_directory() {
    let archive = write(&[]);
    let tight = ReadLimits {
        max_entries: 2,
        ..limits()
    };
    assert!(matches!(
        read_both(&archive, &tight),
        Err(TorchSaveError::Container(_))
    ));
    assert_eq!(read_one(&archive).unwrap(), vec![]);
}
