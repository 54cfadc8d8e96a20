//! The worker SDKs: the upload rate of a Python SDK worker (`python/benchmarks/upload_bench.py`
//! in the project venv) next to the Rust client's, on the same model and coordinator, with a
//! raw loopback TCP copy of a frame of the same size as the baseline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use diloco_client::wire::layout::ModelLayout;
use diloco_client::{ClientConfig, CoordinatorClient, DilocoWorker, WorkerOptions};
use diloco_tests::get_status;
use serde_json::{Value, json};

use crate::baselines::{Landing, raw_tcp_bytes_per_second};
use crate::setup::{post_json, start_coordinator_on};
use crate::{MB, REPETITIONS, TENSOR_ELEMENTS, median};

/// Rows and columns of each matrix of the SDK benchmark's model.
const SDK_TENSOR_SHAPE: [usize; 2] = [2048, 1024];
const SDK_CONFIG: &str = "training: {heartbeat_timeout_seconds: 3600, sync_timeout_seconds: 3600, \
                          download_dtype: bf16}\n\
                          checkpoint: {every_rounds: 0}\n";

/// Upload rates (bytes per second) of the SDKs and of a raw copy of as many bytes.
pub struct SdkUpload {
    pub upload_bytes: usize,
    pub raw: f64,
    pub rust: f64,
    pub python: f64,
}

/// The SDK benchmark's model: `layers.<i>.weight` matrices, the names a PyTorch
/// `ModuleList` of layers with a `weight` each produces.
fn sdk_layout(params: usize) -> ModelLayout {
    let tensors = (0..params / TENSOR_ELEMENTS)
        .map(|i| (format!("layers.{i}.weight"), SDK_TENSOR_SHAPE.to_vec()))
        .collect();
    ModelLayout::new(tensors).expect("distinct names")
}

/// The upload rate of each worker SDK on one coordinator: its `sync` timed from the start
/// (pseudo-gradient computed, encoded, uploaded) until the coordinator has received,
/// validated and folded the upload, while a blocker keeps the round open as in the ingest
/// measurement; then the blocker leaves, the round closes, and it rejoins. The Rust client
/// runs here, the Python SDK in `python/benchmarks/upload_bench.py`; the baseline is a raw
/// loopback TCP copy of a frame of the same size.
pub async fn sdk_upload_bench(root: &Path, params: usize) -> SdkUpload {
    let dir = tempfile::tempdir_in(root).expect("temporary directory");
    let layout = sdk_layout(params);
    let coordinator = start_coordinator_on(dir.path(), &layout, SDK_CONFIG);
    let (http, url) = (diloco_tests::http_client(), coordinator.url.clone());

    let (rust, upload_bytes) = rust_sdk_upload_rate(&http, &url, &layout).await;
    eprintln!("  Rust client: {:.0} MB/s", rust / MB);
    let tensors = layout.params().len();
    let python = tokio::task::spawn_blocking(move || python_sdk_upload_rate(&url, tensors))
        .await
        .expect("python benchmark");
    eprintln!("  Python SDK: {:.0} MB/s", python / MB);

    let payload = Bytes::from(vec![7u8; upload_bytes]);
    let raw = tokio::task::spawn_blocking(move || {
        let mut landing = vec![vec![1u8; payload.len()]];
        median(
            (0..REPETITIONS)
                .map(|_| raw_tcp_bytes_per_second(&payload, 1, Landing::Memory, &mut landing, None))
                .collect(),
        )
    })
    .await
    .expect("raw baseline");
    eprintln!("  raw TCP: {:.0} MB/s", raw / MB);
    SdkUpload {
        upload_bytes,
        raw,
        rust,
        python,
    }
}

/// Polls `/status` until `worker_id`'s upload is folded; the seconds since `started`.
async fn seconds_until_folded(
    http: &reqwest::Client,
    url: &str,
    worker_id: &str,
    started: Instant,
) -> f64 {
    let deadline = started + Duration::from_secs(600);
    loop {
        let status = get_status(http, url).await;
        if status.pending_submissions.iter().any(|id| id == worker_id) {
            return started.elapsed().as_secs_f64();
        }
        assert!(Instant::now() < deadline, "upload not folded: {status:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The Rust client's `DilocoWorker::sync` upload rate (median) and its frame's size.
async fn rust_sdk_upload_rate(
    http: &reqwest::Client,
    url: &str,
    layout: &ModelLayout,
) -> (f64, usize) {
    const WORKER: &str = "rust-sdk";
    const BLOCKER: &str = "rust-blocker";
    let shape: Vec<i64> = SDK_TENSOR_SHAPE.iter().map(|d| *d as i64).collect();
    let params: Vec<(String, tch::Tensor)> = layout
        .params()
        .iter()
        .map(|p| {
            let tensor = tch::Tensor::zeros(&shape, (tch::Kind::Float, tch::Device::Cpu));
            (p.name.clone(), tensor)
        })
        .collect();
    post_json(
        http,
        &format!("{url}/register"),
        json!({"worker_id": BLOCKER}),
    )
    .await;
    let client = CoordinatorClient::new(ClientConfig::new(url)).expect("client");
    let mut options = WorkerOptions::new(WORKER);
    options.initialize = false;
    let mut worker = DilocoWorker::join(client, options, &params)
        .await
        .expect("the Rust worker joins");
    let (mut rates, mut upload_bytes) = (Vec::new(), 0);
    for _ in 0..REPETITIONS {
        // Some local progress, so the pseudo-gradient is not zero.
        tch::no_grad(|| {
            for (_, tensor) in &params {
                let _ = tensor.shallow_clone().f_add_scalar_(1e-3).expect("add");
            }
        });
        let started = Instant::now();
        let (report, elapsed) = tokio::join!(worker.sync(&params), async {
            let elapsed = seconds_until_folded(http, url, WORKER, started).await;
            // The round closes; the sync returns.
            post_json(
                http,
                &format!("{url}/deregister"),
                json!({"worker_id": BLOCKER}),
            )
            .await;
            elapsed
        });
        let report = report.expect("sync");
        assert!(report.contributed, "the upload was folded");
        upload_bytes = report.upload_bytes;
        rates.push(upload_bytes as f64 / elapsed);
        post_json(
            http,
            &format!("{url}/register"),
            json!({"worker_id": BLOCKER}),
        )
        .await;
    }
    worker.leave().await.expect("the Rust worker leaves");
    post_json(
        http,
        &format!("{url}/deregister"),
        json!({"worker_id": BLOCKER}),
    )
    .await;
    (median(rates), upload_bytes)
}

/// The Python SDK's upload rate (median, bytes per second) from
/// `python/benchmarks/upload_bench.py`, run with the SDK's sources on `PYTHONPATH`.
fn python_sdk_upload_rate(url: &str, tensors: usize) -> f64 {
    let repo = diloco_tests::local_cluster::repo_root();
    let python = venv_python(&repo);
    let output = Command::new(&python)
        .arg(repo.join("python/benchmarks/upload_bench.py"))
        .args(["--url", url, "--tensors", &tensors.to_string()])
        .args(["--rows", &SDK_TENSOR_SHAPE[0].to_string()])
        .args(["--cols", &SDK_TENSOR_SHAPE[1].to_string()])
        .args(["--repetitions", &REPETITIONS.to_string()])
        .env("PYTHONPATH", repo.join("python/src"))
        .output()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", python.display()));
    assert!(
        output.status.success(),
        "the Python upload benchmark failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(&output.stdout).expect("its JSON line");
    result["python_upload_mbps"]
        .as_f64()
        .expect("python_upload_mbps")
        * MB
}

/// `DILOCO_PYTHON`, else the project venv's interpreter (`VENV_DIR` of `scripts/common.sh`).
fn venv_python(repo: &Path) -> PathBuf {
    if let Some(python) = std::env::var_os("DILOCO_PYTHON") {
        return python.into();
    }
    let output = Command::new("bash")
        .args(["-c", "source scripts/common.sh && printf %s \"$VENV_DIR\""])
        .current_dir(repo)
        .output()
        .expect("bash runs");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).into_owned()).join("bin/python")
}
