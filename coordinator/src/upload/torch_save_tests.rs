//! The receiver on `torch.save` uploads: however the body is cut into chunks, the archive
//! streams through and gives exactly the data a safetensors upload of the same tensors gives;
//! bytes after the end record, a body cut short and NaN are refused.

use std::sync::Arc;

use bytes::Bytes;

use super::{Expectation, UploadError, UploadReceiver};
use crate::model::ModelLayout;
use crate::wire::dtype::{WireDtype, f32_to_bf16};
use crate::wire::frame::{FrameHeader, PayloadFormat, encode_frame};
use crate::wire::safetensors;
use crate::wire::torch_save::{self, StorageDtype, TensorToWrite};

fn layout() -> Arc<ModelLayout> {
    Arc::new(ModelLayout::new(vec![("w".into(), vec![3, 5]), ("b".into(), vec![5])]).unwrap())
}

fn expectation() -> Expectation {
    Expectation::PseudoGradient {
        layout: layout(),
        dtype: WireDtype::Bf16,
        required: Arc::new(vec![0, 1]),
    }
}

fn bf16(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| f32_to_bf16(*v).to_le_bytes())
        .collect()
}

fn frame(fmt: PayloadFormat, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        worker_id: "w1".into(),
        fragment_id: None,
        fmt,
        round: None,
    };
    encode_frame(&header, payload)
}

/// The pseudo-gradient as a torch.save archive (dict order w, b: not the layout's order).
fn archive(w: &[f32]) -> Vec<u8> {
    let (w, b) = (bf16(w), bf16(&[0.5; 5]));
    torch_save::write(&[
        TensorToWrite {
            name: "w",
            dtype: StorageDtype::Bf16,
            shape: &[3, 5],
            data: &w,
        },
        TensorToWrite {
            name: "b",
            dtype: StorageDtype::Bf16,
            shape: &[5],
            data: &b,
        },
    ])
}

fn receive(body: &[u8], chunk: usize) -> Result<super::StagedUpload, UploadError> {
    let mut receiver = UploadReceiver::new(expectation(), 1 << 20);
    for piece in body.chunks(chunk) {
        receiver.push(Bytes::copy_from_slice(piece))?;
    }
    receiver.finish()
}

#[test]
fn a_torch_save_upload_reads_the_same_in_any_chunking() {
    let w: Vec<f32> = (0..15).map(|i| i as f32 * 0.25 - 1.0).collect();
    let body = frame(PayloadFormat::Pickle, &archive(&w));
    let whole = receive(&body, body.len()).unwrap();
    assert_eq!(whole.dtype, WireDtype::Bf16);
    let names: Vec<_> = whole.tensors.iter().map(|t| t.param).collect();
    assert_eq!(
        names,
        [1, 0],
        "data order is the dict's: w (index 1), then b (index 0)"
    );
    let mut expected = bf16(&w);
    expected.extend(bf16(&[0.5; 5]));
    assert_eq!(&*whole.data, &expected[..]);
    for chunk in [1, 7, 64, 333] {
        let upload = receive(&body, chunk).unwrap();
        assert_eq!(&*upload.data, &expected[..], "chunks of {chunk}");
    }
    // The same tensors in safetensors stage the same bytes (in the layout's order, b then w).
    let mut values = vec![0.5f32; 5];
    values.extend(&w);
    let blob = safetensors::encode(&layout(), &values, WireDtype::Bf16, &Default::default());
    let st = receive(&frame(PayloadFormat::Safetensors, &blob), 64).unwrap();
    assert_eq!(st.data_len, whole.data_len);
}

#[test]
fn bytes_after_the_end_record_a_cut_body_and_nan_are_refused() {
    let w = [0.0f32; 15];
    let mut body = frame(PayloadFormat::Pickle, &archive(&w));
    let cut = &body[..body.len() - 1];
    assert!(matches!(receive(cut, 50), Err(UploadError::TorchSave(_))));
    body.push(0);
    // The archive's end is only known when the body ends: a byte after the end record leaves
    // the body without an end record at its end, refused then, in its own chunk or not.
    let mut receiver = UploadReceiver::new(expectation(), 1 << 20);
    receiver
        .push(Bytes::copy_from_slice(&body[..body.len() - 1]))
        .unwrap();
    receiver.push(Bytes::from_static(&[0])).unwrap();
    assert!(matches!(receiver.finish(), Err(UploadError::TorchSave(_))));
    assert!(matches!(receive(&body, 50), Err(UploadError::TorchSave(_))));
    let mut nan = w;
    nan[7] = f32::NAN;
    let body = frame(PayloadFormat::Pickle, &archive(&nan));
    assert!(matches!(receive(&body, 50), Err(UploadError::NotFinite(name)) if name == "w"));
}

#[test]
fn a_zip_sent_as_safetensors_and_a_refused_global_are_415_material() {
    let body = frame(PayloadFormat::Safetensors, &archive(&[0.0; 15]));
    assert!(matches!(
        receive(&body, 64),
        Err(UploadError::FormatMismatch)
    ));
    let mut hostile = archive(&[0.0; 15]);
    let at = hostile
        .windows(12)
        .position(|w| w == b"torch._utils")
        .unwrap();
    hostile[at..at + 12].copy_from_slice(b"posix\nsystem");
    match receive(&frame(PayloadFormat::Pickle, &hostile), 64) {
        Err(UploadError::TorchSave(error)) => assert!(error.is_refused_construct(), "{error}"),
        other => panic!("{other:?}"),
    }
}
