//! A coordinator to measure: a fresh model of a given size, the pseudo-gradient every worker
//! uploads, and the requests the measurements make.

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use diloco_client::wire::dtype::WireDtype;
use diloco_client::wire::layout::ModelLayout;
use diloco_client::wire::safetensors;
use diloco_tests::frames::frame_with_blob;
use diloco_tests::processes::CoordinatorProcess;
use serde_json::Value;

use crate::TENSOR_ELEMENTS;

pub fn layout(params: usize) -> ModelLayout {
    let tensors = (0..params / TENSOR_ELEMENTS)
        .map(|i| (format!("layers.{i:03}.weight"), vec![2048, 1024]))
        .collect();
    ModelLayout::new(tensors).expect("distinct names")
}

/// The ingest benches' coordinator settings: rounds never time out and no checkpoint is
/// written, so what is timed is receiving, validating and folding.
pub const INGEST_CONFIG: &str = "training: {heartbeat_timeout_seconds: 3600, \
                                 sync_timeout_seconds: 3600, download_dtype: bf16}\n\
                                 checkpoint: {every_rounds: 0}\n";

/// Starts a coordinator on a fresh model of `params` fp32 parameters.
pub fn start_coordinator(dir: &Path, params: usize, config: &str) -> CoordinatorProcess {
    start_coordinator_on(dir, &layout(params), config)
}

/// Starts a coordinator on a fresh model laid out as `layout`.
pub fn start_coordinator_on(dir: &Path, layout: &ModelLayout, config: &str) -> CoordinatorProcess {
    let params = layout.total_elements();
    let initial: Vec<f32> = (0..params).map(|i| (i % 1000) as f32 * 1e-3).collect();
    let blob = safetensors::encode(layout, &initial, WireDtype::Fp32, &BTreeMap::new());
    drop(initial);
    std::fs::write(dir.join("init.safetensors"), blob).expect("initial parameters written");
    CoordinatorProcess::start(
        dir,
        &format!("model: {{initial_parameters: init.safetensors}}\n{config}"),
    )
}

/// The bf16 safetensors blob of a small, finite pseudo-gradient, shared by every upload.
pub fn pseudo_gradient(params: usize) -> Bytes {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let values: Vec<f32> = (0..params)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02
        })
        .collect();
    Bytes::from(safetensors::encode(
        &layout(params),
        &values,
        WireDtype::Bf16,
        &BTreeMap::new(),
    ))
}

/// A whole upload body of `worker_id`: its frame header, then the shared blob.
pub fn upload_body(worker_id: &str, blob: &Bytes) -> Bytes {
    Bytes::from(frame_with_blob(worker_id, blob))
}

pub async fn post_json(http: &reqwest::Client, url: &str, body: Value) {
    let response = http.post(url).json(&body).send().await.expect("request");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
}

/// Submits `body` and reads the parameters that come back (discarding them).
pub async fn submit(http: reqwest::Client, url: String, body: Bytes) {
    let mut response = http
        .post(format!("{url}/submit_pseudograd"))
        .body(body)
        .send()
        .await
        .expect("upload sent");
    assert_eq!(response.status(), 200, "upload accepted");
    while response
        .chunk()
        .await
        .expect("parameters received")
        .is_some()
    {}
}
