//! The coordinator's upload pipeline (`UploadReceiver`), as `/submit_pseudograd` and
//! `/init_params` drive it: any body, cut into chunks of any size, is refused or gives an
//! upload whose tensors tile exactly the data it holds, every element finite, within the size
//! limit — never a panic, and never an allocation for a size the header merely claims.
//!
//! Input: one control byte, then the body. The control byte's low two bits pick what the
//! upload must be (initial parameters; a full bf16 pseudo-gradient; an fp32 slice; a
//! pseudo-gradient whose expectation is set once the frame names the worker, streamed as the
//! round's first upload is); the other six pick the chunk size.
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use diloco_coordinator::model::ModelLayout;
use diloco_coordinator::upload::{DataSink, Expectation, StagedUpload, UploadReceiver};
use diloco_coordinator::wire::dtype::WireDtype;
use libfuzzer_sys::fuzz_target;

/// `limits.max_upload_bytes` for the run: small, so the limit is actually reached.
const LIMIT: u64 = 1 << 16;

fn layout() -> Arc<ModelLayout> {
    Arc::new(
        ModelLayout::new(vec![("w".into(), vec![4, 8]), ("b".into(), vec![8])])
            .expect("a valid layout"),
    )
}

fn pseudo_gradient(dtype: WireDtype, required: Vec<usize>) -> Expectation {
    Expectation::PseudoGradient {
        layout: layout(),
        dtype,
        required: Arc::new(required),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let chunk = 1 + usize::from(control >> 2) * 5;
    let (mut receiver, streamed) = match control & 3 {
        0 => (
            UploadReceiver::new(Expectation::InitialParameters, LIMIT),
            false,
        ),
        1 => (
            UploadReceiver::new(pseudo_gradient(WireDtype::Bf16, vec![0, 1]), LIMIT),
            false,
        ),
        2 => (
            UploadReceiver::new(pseudo_gradient(WireDtype::Fp32, vec![0]), LIMIT),
            false,
        ),
        _ => (UploadReceiver::awaiting_expectation(LIMIT), true),
    };
    let mut pieces: Vec<(usize, Bytes)> = Vec::new();
    let mut expectation_set = !streamed;
    for piece in body.chunks(chunk) {
        if receiver.push(Bytes::copy_from_slice(piece)).is_err() {
            return;
        }
        if !expectation_set && receiver.frame().is_some() {
            let set = receiver.set_expectation(
                pseudo_gradient(WireDtype::Bf16, vec![0, 1]),
                DataSink::Stream,
            );
            if set.is_err() {
                return;
            }
            expectation_set = true;
        }
        pieces.extend(receiver.take_validated());
    }
    let Ok(upload) = receiver.finish() else {
        return;
    };
    check(&upload, streamed.then_some(pieces.as_slice()));
});

/// What an accepted upload promises whoever folds it.
fn check(upload: &StagedUpload, streamed: Option<&[(usize, Bytes)]>) {
    assert!(upload.data_len as u64 <= LIMIT, "over the limit");
    let mut elements = 0;
    for tensor in &upload.tensors {
        assert_eq!(tensor.first_element, elements, "tensors tile the data");
        elements += tensor.elements;
    }
    assert_eq!(elements * upload.dtype.size(), upload.data_len);
    match streamed {
        None => {
            assert_eq!(upload.data.len(), upload.data_len);
            assert!(upload.dtype.all_finite(&upload.data), "only finite values pass");
        }
        Some(pieces) => {
            let mut offset = 0;
            for (at, bytes) in pieces {
                assert_eq!(*at, offset, "pieces arrive in order, without gaps");
                offset += bytes.len();
            }
            assert_eq!(offset, upload.data_len);
            let joined: Vec<u8> = pieces.iter().flat_map(|(_, b)| b.iter().copied()).collect();
            assert!(upload.dtype.all_finite(&joined), "only finite values pass");
        }
    }
    if let Some(layout) = &upload.layout {
        assert_eq!(layout.params().len(), upload.tensors.len());
        assert_eq!(layout.total_elements(), elements);
    }
}
