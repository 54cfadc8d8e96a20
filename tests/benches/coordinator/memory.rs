//! Memory: the coordinator's peak RSS (`VmHWM`) through two rounds with a number of workers,
//! against the budget (12 + b_d + 2·b_u)·P·1.1 + 500 MB.

use std::path::Path;

use bytes::Bytes;
use diloco_tests::get_status;
use serde_json::json;

use crate::setup::{post_json, pseudo_gradient, start_coordinator, submit, upload_body};

/// Peak RSS of a fresh coordinator through two rounds of `workers` concurrent uploads.
pub async fn memory_bench(root: &Path, params: usize, workers: usize) -> u64 {
    let dir = tempfile::tempdir_in(root).expect("temporary directory");
    let coordinator = start_coordinator(
        dir.path(),
        params,
        "training: {heartbeat_timeout_seconds: 3600, sync_timeout_seconds: 3600}\n\
         checkpoint: {every_rounds: 0}\n",
    );
    let (http, url) = (diloco_tests::http_client(), coordinator.url.clone());
    let blob = pseudo_gradient(params);
    let ids: Vec<String> = (0..workers).map(|i| format!("w{i}")).collect();
    for id in &ids {
        post_json(&http, &format!("{url}/register"), json!({"worker_id": id})).await;
    }
    let bodies: Vec<Bytes> = ids.iter().map(|id| upload_body(id, &blob)).collect();
    for _ in 0..2 {
        let uploads: Vec<_> = bodies
            .iter()
            .map(|body| tokio::spawn(submit(http.clone(), url.clone(), body.clone())))
            .collect();
        for upload in uploads {
            upload.await.expect("upload task");
        }
    }
    assert_eq!(
        get_status(&http, &url).await.sync_round,
        2,
        "two rounds ran"
    );
    coordinator.peak_rss_bytes()
}
