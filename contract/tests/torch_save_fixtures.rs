//! The `torch.save` reader against files PyTorch wrote (`tests/fixtures/torch_save/`, made by
//! `make_torch_save_fixtures.py`): every dtype, transposed and strided views, storage offsets,
//! shared storages, 0-d and empty tensors, a module's `state_dict()`, `nn.Parameter`s and
//! pickle protocol 4. Each must read back byte for byte as the tensors made contiguous, and our
//! writer's archive of the same tensors must read back the same.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use diloco_contract::wire::safetensors::{SafetensorsHeader, header_length, parse_header};
use diloco_contract::wire::torch_save::{
    self, ReadLimits, StorageDtype, StreamEvent, StreamReader, TensorBytes, TensorToWrite,
    TorchSaveTensor,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_save")
}

/// `(name, dtype, shape, bytes)` of a safetensors file, by name.
fn expected(case: &str) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let blob = std::fs::read(fixtures().join(format!("{case}.expected.safetensors"))).unwrap();
    let n = header_length(&blob).unwrap().unwrap();
    let header = parse_header(&blob[8..8 + n]).unwrap();
    let data = &blob[8 + n..];
    let mut tensors: Vec<_> = header
        .tensors
        .into_iter()
        .map(|t| (t.name, t.dtype, t.shape, data[t.data].to_vec()))
        .collect();
    tensors.sort();
    tensors
}

fn as_expected(
    tensors: &[TorchSaveTensor],
    archive: &[u8],
) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let mut out: Vec<_> = tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.dtype.safetensors_name().to_string(),
                t.shape.clone(),
                t.bytes(archive).to_vec(),
            )
        })
        .collect();
    out.sort();
    out
}

fn cases() -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".pt").map(str::to_string)
        })
        .collect();
    cases.sort();
    cases
}

#[test]
fn every_fixture_pytorch_wrote_reads_back_byte_for_byte() {
    let cases = cases();
    assert_eq!(cases.len(), 13, "{cases:?}");
    for case in cases {
        let archive = std::fs::read(fixtures().join(format!("{case}.pt"))).unwrap();
        let tensors = torch_save::read(&archive, &ReadLimits::default())
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let want = expected(&case);
        assert!(!want.is_empty(), "{case}");
        assert_eq!(as_expected(&tensors, &archive), want, "{case}");
    }
}

#[test]
fn every_dtype_and_view_kind_is_covered() {
    for dtype in StorageDtype::ALL {
        let case = format!("views_{}", dtype.safetensors_name().to_lowercase());
        let archive = std::fs::read(fixtures().join(format!("{case}.pt"))).unwrap();
        let tensors = torch_save::read(&archive, &ReadLimits::default()).unwrap();
        let by_name = |n: &str| tensors.iter().find(|t| t.name == n).unwrap();
        assert!(tensors.iter().all(|t| t.dtype == dtype), "{case}");
        // Contiguous views (whole or at an offset) are slices of the archive: no copy.
        for name in ["matrix", "rows", "vector", "scalar", "zero_d"] {
            assert!(
                matches!(by_name(name).data, TensorBytes::Archive(_)),
                "{case} {name}"
            );
        }
        for name in ["transposed", "corner", "strided"] {
            assert!(
                matches!(by_name(name).data, TensorBytes::Gathered(_)),
                "{case} {name}"
            );
        }
        assert_eq!(by_name("transposed").shape, [7, 5]);
        assert_eq!(by_name("scalar").shape, Vec::<usize>::new());
        assert_eq!(by_name("empty").shape, [0, 4]);
        assert_eq!(by_name("empty").byte_len(), 0);
    }
}

#[test]
fn our_archive_of_the_fixture_tensors_reads_back_the_same() {
    for case in cases() {
        let want = expected(&case);
        let tensors: Vec<_> = want
            .iter()
            .map(|(name, dtype, shape, data)| TensorToWrite {
                name,
                dtype: StorageDtype::ALL
                    .into_iter()
                    .find(|d| d.safetensors_name() == dtype)
                    .unwrap(),
                shape,
                data,
            })
            .collect();
        let archive = torch_save::write(&tensors);
        let back = torch_save::read(&archive, &ReadLimits::default()).unwrap();
        assert_eq!(as_expected(&back, &archive), want, "{case}");
    }
}

/// The reader never panics on any prefix or one-byte corruption of a real file.
#[test]
fn truncated_or_corrupted_fixtures_are_refused_or_read_never_panic() {
    let archive = std::fs::read(fixtures().join("views_f32.pt")).unwrap();
    let limits = ReadLimits {
        max_tensor_bytes: 1 << 16,
        ..ReadLimits::default()
    };
    for cut in (0..archive.len()).step_by(7) {
        assert!(
            torch_save::read(&archive[..cut], &limits).is_err(),
            "cut {cut}"
        );
    }
    for at in 0..archive.len() {
        let mut bad = archive.clone();
        bad[at] ^= 0xa5;
        let _ = torch_save::read(&bad, &limits);
    }
}

/// Every file PyTorch wrote, read as it streams in pieces of every awkward size: the same
/// tensors, in the dict's order, as reading it whole. PyTorch writes its sizes only in data
/// descriptors, so this is the descriptor path the coordinator takes for forgather's uploads.
#[test]
fn every_fixture_streams_to_the_same_tensors_as_read_whole() {
    for case in cases() {
        let archive = std::fs::read(fixtures().join(format!("{case}.pt"))).unwrap();
        let whole = torch_save::read(&archive, &ReadLimits::default()).unwrap();
        let want: Vec<u8> = whole
            .iter()
            .flat_map(|t| t.bytes(&archive).to_vec())
            .collect();
        for chunk in [1, 2, 15, 16, 17, 64, 1000, 4096, archive.len()] {
            let (header, data) = streamed(&archive, &ReadLimits::default(), chunk)
                .unwrap_or_else(|e| panic!("{case} in {chunk}-byte pieces: {e}"));
            assert_eq!(
                header,
                torch_save::safetensors_header(&whole),
                "{case} {chunk}"
            );
            assert_eq!(data, want, "{case} {chunk}");
        }
    }
}

/// Any prefix of a real file is refused when the body ends; a one-byte corruption anywhere is
/// refused or streams to what reading it whole gives, and never panics.
#[test]
fn truncated_or_corrupted_fixtures_stream_to_a_refusal_or_the_whole_reading() {
    let archive = std::fs::read(fixtures().join("views_f32.pt")).unwrap();
    let limits = ReadLimits {
        max_tensor_bytes: 1 << 16,
        ..ReadLimits::default()
    };
    for cut in (0..archive.len()).step_by(7) {
        assert!(streamed(&archive[..cut], &limits, 64).is_err(), "cut {cut}");
    }
    for at in 0..archive.len() {
        let mut bad = archive.clone();
        bad[at] ^= 0xa5;
        if let (Ok(whole), Ok((_, data))) =
            (torch_save::read(&bad, &limits), streamed(&bad, &limits, 97))
        {
            let want: Vec<u8> = whole.iter().flat_map(|t| t.bytes(&bad).to_vec()).collect();
            assert_eq!(data, want, "byte {at}");
        }
    }
}

/// The header and data section the streaming reader gives for `archive` fed in `chunk`-byte
/// pieces (checking that data comes after the plan, in order).
fn streamed(
    archive: &[u8],
    limits: &ReadLimits,
    chunk: usize,
) -> Result<(SafetensorsHeader, Vec<u8>), torch_save::TorchSaveError> {
    let mut reader = StreamReader::new(*limits);
    let (mut header, mut data, mut events) = (None, Vec::new(), Vec::new());
    for piece in archive.chunks(chunk) {
        reader.push(Bytes::copy_from_slice(piece), &mut events)?;
        for event in events.drain(..) {
            match event {
                StreamEvent::Planned(planned) => header = Some(planned),
                StreamEvent::Data { offset, bytes } => {
                    assert!(header.is_some());
                    assert_eq!(offset, data.len());
                    data.extend_from_slice(&bytes);
                }
            }
        }
    }
    reader.finish()?;
    Ok((header.expect("planned"), data))
}
