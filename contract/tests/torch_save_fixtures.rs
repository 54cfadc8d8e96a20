//! The `torch.save` reader against files PyTorch wrote (`tests/fixtures/torch_save/`, made by
//! `make_torch_save_fixtures.py`): every dtype, transposed and strided views, storage offsets,
//! shared storages, 0-d and empty tensors, a module's `state_dict()`, `nn.Parameter`s and
//! pickle protocol 4. Each must read back byte for byte as the tensors made contiguous, and our
//! writer's archive of the same tensors must read back the same.

use std::path::{Path, PathBuf};

use diloco_contract::wire::safetensors::{header_length, parse_header};
use diloco_contract::wire::torch_save::{
    self, ReadLimits, StorageDtype, TensorBytes, TensorToWrite, TorchSaveTensor,
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
