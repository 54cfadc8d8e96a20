//! Ingest of `torch.save` uploads (forgather's default codec) against safetensors: one worker,
//! the same pseudo-gradient in both codecs, rounds alternated, timed from the first byte sent
//! until the upload is folded. The archive streams through the restricted reader (its tensors'
//! bytes pass straight on once `data.pkl` is read), so the question is what that reader costs
//! over safetensors' header parse.

use std::path::Path;

use bytes::Bytes;
use diloco_client::wire::torch_save;
use diloco_tests::get_status;
use serde_json::json;

use crate::ingest::one_round;
use crate::setup::{INGEST_CONFIG, post_json, pseudo_gradient, start_coordinator, upload_body};
use crate::{REPETITIONS, median};

/// Seconds to ingest one upload in each codec (medians).
pub struct PickleIngest {
    pub safetensors_seconds: f64,
    pub pickle_seconds: f64,
    pub safetensors_bytes: usize,
    pub pickle_bytes: usize,
}

impl PickleIngest {
    /// Safetensors' ingest time over pickle's: 1.0 means the codecs cost the same.
    pub fn ratio(&self) -> f64 {
        self.safetensors_seconds / self.pickle_seconds
    }
}

/// A frame without `fmt` (pickle, as forgather sends it) around `archive`.
fn pickle_body(worker_id: &str, archive: &[u8]) -> Bytes {
    let json = format!(r#"{{"worker_id":"{worker_id}"}}"#);
    let mut body = (json.len() as u32).to_be_bytes().to_vec();
    body.extend_from_slice(json.as_bytes());
    body.extend_from_slice(archive);
    Bytes::from(body)
}

pub async fn pickle_ingest_bench(root: &Path, params: usize) -> PickleIngest {
    let dir = tempfile::tempdir_in(root).expect("temporary directory");
    let coordinator = start_coordinator(dir.path(), params, INGEST_CONFIG);
    let (http, url) = (diloco_tests::http_client(), coordinator.url.clone());
    let blob = pseudo_gradient(params);
    let archive = torch_save::from_safetensors(&blob).expect("the blob converts");
    let safetensors = upload_body("w0", &blob);
    let pickle = pickle_body("w0", &archive);
    for id in ["w0", "blocker"] {
        post_json(&http, &format!("{url}/register"), json!({"worker_id": id})).await;
    }
    let (mut st, mut pk) = (Vec::new(), Vec::new());
    for repetition in 0..REPETITIONS {
        for (codec, body, times) in [
            ("safetensors", &safetensors, &mut st),
            ("pickle", &pickle, &mut pk),
        ] {
            let measure = one_round(&http, &coordinator, std::slice::from_ref(body), &[]).await;
            let seconds = body.len() as f64 / measure.rate;
            eprintln!("  round {repetition}, {codec}: {seconds:.3} s");
            times.push(seconds);
        }
    }
    assert!(get_status(&http, &url).await.sync_round >= 2 * REPETITIONS as u64);
    PickleIngest {
        safetensors_seconds: median(st),
        pickle_seconds: median(pk),
        safetensors_bytes: safetensors.len(),
        pickle_bytes: pickle.len(),
    }
}
