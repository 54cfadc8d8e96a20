//! `make bench`: the coordinator's ingest rate, peak memory and outer-step time, each against
//! a baseline measured in the same run on the same machine:
//!
//! - ingest: workers uploading bf16 pseudo-gradients, timed from the first byte sent until
//!   the coordinator has received, validated and folded every upload, against a raw loopback
//!   TCP copy of the same number of bytes from the sender's memory into the receiver's
//!   (1 stream, and 4 concurrent streams); a receiver that discards the bytes into a small
//!   cache-resident buffer is measured too and reported beside it;
//! - memory: the coordinator's peak RSS (`VmHWM`) through two rounds with 1, 4 and 16
//!   workers, against the budget (12 + b_d + 2·b_u)·P·1.1 + 500 MB;
//! - outer step: its wall time against 20·P bytes at the bandwidth of a STREAM triad run with
//!   as many threads as the coordinator uses;
//! - worker SDKs: the upload rate of a Python SDK worker (`python/benchmarks/upload_bench.py`
//!   in the project venv) next to the Rust client's, on the same model and coordinator, with
//!   a raw loopback TCP copy of a frame of the same size as the baseline.
//!
//! `DILOCO_BENCH_ONLY=ingest` stops after the ingest measurements (cleartext and TLS) and
//! prints just their ratios, without writing the summary.
//!
//! Prints one JSON object and writes it to `target/bench/summary.json`. Sizes can be changed
//! with `DILOCO_BENCH_INGEST_PARAMS`, `DILOCO_BENCH_MEMORY_PARAMS` and
//! `DILOCO_BENCH_SDK_PARAMS` (parameter counts); `DILOCO_PYTHON` picks the Python interpreter
//! (default: the venv `scripts/common.sh` names).

// The summary is one `json!` literal, deeper than the macro's default recursion limit.
#![recursion_limit = "256"]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use diloco_client::wire::dtype::WireDtype;
use diloco_client::wire::layout::ModelLayout;
use diloco_client::wire::safetensors;
use diloco_client::{ClientConfig, CoordinatorClient, DilocoWorker, WorkerOptions};
use diloco_tests::frames::frame_with_blob;
use diloco_tests::get_status;
use diloco_tests::pki::TestCa;
use diloco_tests::processes::{CoordinatorProcess, cpu_seconds};
use serde_json::{Value, json};

/// Elements per tensor of the synthetic model (a 2048 × 1024 matrix).
const TENSOR_ELEMENTS: usize = 2048 * 1024;
const REPETITIONS: usize = 4;
const MB: f64 = 1e6;

fn main() {
    let ingest_params = params_from_env("DILOCO_BENCH_INGEST_PARAMS", 1 << 27);
    let memory_params = params_from_env("DILOCO_BENCH_MEMORY_PARAMS", 1 << 26);
    let sdk_params = params_from_env("DILOCO_BENCH_SDK_PARAMS", 1 << 26);
    let root = diloco_tests::bench_dir();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");

    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    eprintln!("triad with {threads} threads …");
    let triad = triad_bytes_per_second(threads);
    eprintln!("  {:.0} MB/s", triad / MB);

    eprintln!("ingest and outer step, P = {ingest_params} …");
    let ingest = runtime.block_on(ingest_bench(&root, ingest_params));
    eprintln!("ingest over TLS, P = {ingest_params} …");
    let (ingest_tls, cpu_tls) = runtime.block_on(tls_ingest_bench(&root, ingest_params));
    let outer_step_bound = 20.0 * ingest_params as f64 / triad;
    // CPU per byte on each side: where ingest time goes when workers and coordinator share
    // the cores, and what a coordinator core would cost with the workers elsewhere.
    let cpu = json!({
        "cleartext_1_worker": ingest.cpu_1.json(),
        "cleartext_4_workers": ingest.cpu_4.json(),
        "tls_1_worker": cpu_tls.json(),
    });
    if std::env::var("DILOCO_BENCH_ONLY").as_deref() == Ok("ingest") {
        // A quick look while working on the upload path; the summary file is left alone.
        let quick = json!({
            "ingest_ratio_1": ingest.ours_1 / ingest.raw_1,
            "ingest_ratio_4": ingest.ours_4 / ingest.raw_4,
            "ingest_ratio_tls": ingest_tls / ingest.raw_1,
            "tls_cost_vs_cleartext": 1.0 - ingest_tls / ingest.ours_1,
            "cpu_ns_per_uploaded_byte": cpu.clone(),
        });
        println!("{quick:#}");
        return;
    }

    eprintln!("worker SDK uploads, P = {sdk_params} …");
    let sdk = runtime.block_on(sdk_upload_bench(&root, sdk_params));

    eprintln!("memory, P = {memory_params} …");
    let mut rss = BTreeMap::new();
    for workers in [1, 4, 16] {
        let peak = runtime.block_on(memory_bench(&root, memory_params, workers));
        eprintln!(
            "  {workers:>2} workers: peak RSS {:.0} MB",
            peak as f64 / MB
        );
        rss.insert(workers.to_string(), peak);
    }
    // fp32 θ, momentum and accumulator; the fp32 download; two bf16 uploads in flight.
    let (b_d, b_u) = (4.0, 2.0);
    let budget = ((12.0 + b_d + 2.0 * b_u) * memory_params as f64 * 1.1 + 500.0 * MB) as u64;
    let (smallest, largest) = (
        *rss.values().min().unwrap_or(&0),
        *rss.values().max().unwrap_or(&0),
    );
    let growth = largest as f64 / smallest.max(1) as f64 - 1.0;

    let ingest_ratio_1 = ingest.ours_1 / ingest.raw_1;
    let ingest_ratio_4 = ingest.ours_4 / ingest.raw_4;
    let ingest_ratio_tls = ingest_tls / ingest.raw_1;
    let outer_step_ratio = ingest.outer_step_seconds / outer_step_bound;
    let targets = json!({
        "ingest_ratio_1": ingest_ratio_1 >= 0.8,
        "ingest_ratio_4": ingest_ratio_4 >= 0.8,
        "ingest_ratio_tls_within_25_percent_of_cleartext": ingest_tls >= 0.75 * ingest.ours_1,
        "rss_within_budget": largest <= budget,
        "rss_flat_within_5_percent": growth <= 0.05,
        "outer_step_ratio": outer_step_ratio <= 2.0,
    });
    let all_met = targets
        .as_object()
        .is_some_and(|t| t.values().all(|v| v == &json!(true)));
    let summary = json!({
        "ingest_ratio_1": ingest_ratio_1,
        "ingest_ratio_4": ingest_ratio_4,
        "ingest_ratio_tls": ingest_ratio_tls,
        "rss_bytes_by_workers": rss,
        "rss_budget_bytes": budget,
        "rss_growth_largest_over_smallest": growth,
        "outer_step_ratio": outer_step_ratio,
        "python_upload_mbps": sdk.python / MB,
        "rust_upload_mbps": sdk.rust / MB,
        "targets_met": targets,
        "all_targets_met": all_met,
        "details": {
            "cpu_threads": threads,
            "ingest_params": ingest_params,
            "ingest_upload_bytes": ingest.upload_bytes,
            "raw_tcp_1_stream_mb_per_s": ingest.raw_1 / MB,
            "raw_tcp_1_stream_discarding_mb_per_s": ingest.discard_1 / MB,
            "ingest_1_worker_mb_per_s": ingest.ours_1 / MB,
            "ingest_1_worker_tls_mb_per_s": ingest_tls / MB,
            "tls_cost_vs_cleartext": 1.0 - ingest_tls / ingest.ours_1,
            "raw_tcp_4_streams_mb_per_s": ingest.raw_4 / MB,
            "raw_tcp_4_streams_discarding_mb_per_s": ingest.discard_4 / MB,
            "ingest_4_workers_mb_per_s": ingest.ours_4 / MB,
            "ingest_ratio_1_vs_discarding": ingest.ours_1 / ingest.discard_1,
            "ingest_ratio_4_vs_discarding": ingest.ours_4 / ingest.discard_4,
            "memory_params": memory_params,
            "memory_upload_dtype": "bf16",
            "memory_download_dtype": "fp32",
            "triad_mb_per_s": triad / MB,
            "outer_step_seconds": ingest.outer_step_seconds,
            "publish_seconds": ingest.publish_seconds,
            "cpu_ns_per_uploaded_byte": cpu.clone(),
            "coordinator_tls_cpu_cost_vs_cleartext":
                cpu_tls.coordinator / ingest.cpu_1.coordinator - 1.0,
            "outer_step_bound_seconds": outer_step_bound,
            "sdk_upload_params": sdk_params,
            "sdk_upload_bytes": sdk.upload_bytes,
            "sdk_upload_raw_tcp_mb_per_s": sdk.raw / MB,
            "python_upload_ratio_vs_rust": sdk.python / sdk.rust,
            "python_upload_ratio_vs_raw_tcp": sdk.python / sdk.raw,
            "rust_upload_ratio_vs_raw_tcp": sdk.rust / sdk.raw,
            "repetitions": REPETITIONS,
            "statistic": "median",
        },
    });
    let text = serde_json::to_string_pretty(&summary).expect("JSON");
    std::fs::write(root.join("summary.json"), format!("{text}\n")).expect("summary written");
    println!("{text}");
}

fn params_from_env(name: &str, default: usize) -> usize {
    let params = std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    params.div_ceil(TENSOR_ELEMENTS).max(1) * TENSOR_ELEMENTS
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

// ---------------------------------------------------------------------------------------
// Baselines
// ---------------------------------------------------------------------------------------

/// STREAM triad `a = b + s·c` on f32 arrays of 128 MB each, split over `threads`; bytes
/// counted as STREAM does (read b and c, write a). Best of five.
fn triad_bytes_per_second(threads: usize) -> f64 {
    let n = 1 << 25;
    let (mut a, b, c) = (vec![0f32; n], vec![1f32; n], vec![2f32; n]);
    let share = n.div_ceil(threads);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let started = Instant::now();
        std::thread::scope(|scope| {
            for ((a, b), c) in a
                .chunks_mut(share)
                .zip(b.chunks(share))
                .zip(c.chunks(share))
            {
                scope.spawn(move || {
                    for ((a, b), c) in a.iter_mut().zip(b).zip(c) {
                        *a = *b + 3.0 * *c;
                    }
                });
            }
        });
        best = best.min(started.elapsed().as_secs_f64());
        std::hint::black_box(&mut a);
    }
    (3 * 4 * n) as f64 / best
}

/// How a raw TCP receiver treats the bytes.
#[derive(Clone, Copy)]
enum Landing {
    /// Into one payload-sized buffer per stream: the bytes end up in memory, as an upload's
    /// must. The baseline the ratios use.
    Memory,
    /// Into a 256 KiB buffer overwritten again and again (stays in cache): an upper bound
    /// no receiver that keeps the data can reach, reported for reference.
    Discard,
}

/// Copies `payload` over `streams` loopback TCP connections at once, each sender writing
/// all of it from memory; returns the aggregate bytes per second, timed until every receiver
/// has acknowledged the last byte. `landings` are reused (pre-faulted) between runs.
fn raw_tcp_bytes_per_second(
    payload: &Bytes,
    streams: usize,
    landing: Landing,
    landings: &mut [Vec<u8>],
) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let address = listener.local_addr().expect("local address");
    let started = Instant::now();
    std::thread::scope(|scope| {
        let receivers = scope.spawn(|| {
            std::thread::scope(|inner| {
                for buffer in landings.iter_mut().take(streams) {
                    let (mut socket, _) = listener.accept().expect("accept");
                    inner.spawn(move || {
                        let mut filled = 0;
                        loop {
                            let target = match landing {
                                Landing::Memory => &mut buffer[filled..],
                                Landing::Discard => &mut buffer[..256 << 10],
                            };
                            let n = socket.read(target).expect("read");
                            if n == 0 {
                                break;
                            }
                            filled += n;
                        }
                        socket.write_all(b"k").expect("acknowledge");
                    });
                }
            });
        });
        for _ in 0..streams {
            scope.spawn(|| {
                let mut socket = TcpStream::connect(address).expect("connect");
                socket.write_all(payload).expect("write");
                socket
                    .shutdown(std::net::Shutdown::Write)
                    .expect("shutdown");
                let mut ack = [0u8; 1];
                socket.read_exact(&mut ack).expect("acknowledgement");
            });
        }
        receivers.join().expect("receivers");
    });
    (payload.len() * streams) as f64 / started.elapsed().as_secs_f64()
}

// ---------------------------------------------------------------------------------------
// The coordinator
// ---------------------------------------------------------------------------------------

fn layout(params: usize) -> ModelLayout {
    let tensors = (0..params / TENSOR_ELEMENTS)
        .map(|i| (format!("layers.{i:03}.weight"), vec![2048, 1024]))
        .collect();
    ModelLayout::new(tensors).expect("distinct names")
}

/// Starts a coordinator on a fresh model of `params` fp32 parameters.
fn start_coordinator(dir: &Path, params: usize, config: &str) -> CoordinatorProcess {
    start_coordinator_on(dir, &layout(params), config)
}

/// Starts a coordinator on a fresh model laid out as `layout`.
fn start_coordinator_on(dir: &Path, layout: &ModelLayout, config: &str) -> CoordinatorProcess {
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
fn pseudo_gradient(params: usize) -> Bytes {
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
fn upload_body(worker_id: &str, blob: &Bytes) -> Bytes {
    Bytes::from(frame_with_blob(worker_id, blob))
}

async fn post_json(http: &reqwest::Client, url: &str, body: Value) {
    let response = http.post(url).json(&body).send().await.expect("request");
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
}

/// Submits `body` and reads the parameters that come back (discarding them).
async fn submit(http: reqwest::Client, url: String, body: Bytes) {
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

struct Ingest {
    upload_bytes: usize,
    raw_1: f64,
    discard_1: f64,
    ours_1: f64,
    raw_4: f64,
    discard_4: f64,
    ours_4: f64,
    outer_step_seconds: f64,
    publish_seconds: f64,
    /// CPU nanoseconds per uploaded byte, coordinator and uploading side, 1 and 4 workers.
    cpu_1: CpuPerByte,
    cpu_4: CpuPerByte,
}

/// CPU nanoseconds per uploaded byte on each side of an upload.
#[derive(Clone, Copy)]
struct CpuPerByte {
    coordinator: f64,
    worker: f64,
}

impl CpuPerByte {
    fn json(&self) -> Value {
        json!({"coordinator": self.coordinator, "worker": self.worker})
    }
}

/// Ingest at 1 and 4 workers, interleaved with the raw baselines. A `blocker` worker that
/// never uploads keeps each round open, so the time measured is receiving, validating and
/// folding only; then it leaves, the round closes (outer step, responses) and it rejoins.
async fn ingest_bench(root: &Path, params: usize) -> Ingest {
    let dir = tempfile::tempdir_in(root).expect("temporary directory");
    let coordinator = start_coordinator(
        dir.path(),
        params,
        "training: {heartbeat_timeout_seconds: 3600, sync_timeout_seconds: 3600, \
         download_dtype: bf16}\n\
         checkpoint: {every_rounds: 0}\n",
    );
    let (http, url) = (diloco_tests::http_client(), coordinator.url.clone());
    let blob = pseudo_gradient(params);
    let workers: Vec<String> = (0..4).map(|i| format!("w{i}")).collect();
    let bodies: Vec<Bytes> = workers.iter().map(|w| upload_body(w, &blob)).collect();
    for id in workers.iter().map(String::as_str).chain(["blocker"]) {
        post_json(&http, &format!("{url}/register"), json!({"worker_id": id})).await;
    }
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut outer_steps = Vec::new();
    let mut publishes = Vec::new();
    let mut landings: Vec<Vec<u8>> = (0..4).map(|_| vec![1u8; bodies[0].len()]).collect();
    for repetition in 0..REPETITIONS {
        for n in [1, 4] {
            let payload = bodies[0].clone();
            let mut buffers = std::mem::take(&mut landings);
            let (raw, discard, buffers) = tokio::task::spawn_blocking(move || {
                let raw = raw_tcp_bytes_per_second(&payload, n, Landing::Memory, &mut buffers);
                let discard = raw_tcp_bytes_per_second(&payload, n, Landing::Discard, &mut buffers);
                (raw, discard, buffers)
            })
            .await
            .expect("raw baseline");
            landings = buffers;
            let measure = one_round(&http, &coordinator, &bodies[..n], &workers[n..]).await;
            let (ours, step, publish) = (measure.rate, measure.step, measure.publish);
            eprintln!(
                "  round {repetition}, {n} worker(s): raw {:.0} MB/s (discarding {:.0}), \
                 ours {:.0} MB/s, outer step {step:.3} s, publish {publish:.3} s",
                raw / MB,
                discard / MB,
                ours / MB
            );
            for (key, value) in [
                ("raw", raw),
                ("discard", discard),
                ("ours", ours),
                ("coordinator_cpu", measure.coordinator_cpu),
                ("worker_cpu", measure.worker_cpu),
            ] {
                samples.entry(format!("{key}{n}")).or_default().push(value);
            }
            // The first step also faults in the momentum buffer's pages; steady state after.
            if repetition > 0 {
                outer_steps.push(step);
                publishes.push(publish);
            }
        }
    }
    let mut take = |key: &str| median(samples.remove(key).unwrap_or_default());
    Ingest {
        upload_bytes: bodies[0].len(),
        raw_1: take("raw1"),
        discard_1: take("discard1"),
        ours_1: take("ours1"),
        raw_4: take("raw4"),
        discard_4: take("discard4"),
        ours_4: take("ours4"),
        outer_step_seconds: median(outer_steps),
        publish_seconds: median(publishes),
        cpu_1: CpuPerByte {
            coordinator: take("coordinator_cpu1") * 1e9,
            worker: take("worker_cpu1") * 1e9,
        },
        cpu_4: CpuPerByte {
            coordinator: take("coordinator_cpu4") * 1e9,
            worker: take("worker_cpu4") * 1e9,
        },
    }
}

/// What [`one_round`] measured.
struct RoundMeasure {
    /// Bytes uploaded per second, from the first byte sent until all were folded.
    rate: f64,
    /// Seconds of the outer step that closed the round.
    step: f64,
    /// Seconds encoding the new parameters for download took.
    publish: f64,
    /// CPU seconds per uploaded byte the coordinator used while the uploads came in.
    coordinator_cpu: f64,
    /// CPU seconds per uploaded byte the uploading side (this process) used meanwhile.
    worker_cpu: f64,
}

/// One round in which `bodies` are uploaded at once while `idle` workers (and the blocker)
/// sit it out.
async fn one_round(
    http: &reqwest::Client,
    coordinator: &CoordinatorProcess,
    bodies: &[Bytes],
    idle: &[String],
) -> RoundMeasure {
    let url = coordinator.url.as_str();
    let round = get_status(http, url).await.sync_round;
    let cpu_before = (coordinator.cpu_seconds(), cpu_seconds(None));
    let started = Instant::now();
    let uploads: Vec<_> = bodies
        .iter()
        .map(|body| tokio::spawn(submit(http.clone(), url.to_string(), body.clone())))
        .collect();
    let deadline = started + Duration::from_secs(600);
    let elapsed = loop {
        let status = get_status(http, url).await;
        let folded = status.pending_submissions.len();
        assert_eq!(status.sync_round, round, "the blocker keeps the round open");
        if folded == bodies.len() {
            break started.elapsed().as_secs_f64();
        }
        assert!(Instant::now() < deadline, "uploads not folded: {status:?}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let (coordinator_cpu, worker_cpu) = (
        coordinator.cpu_seconds() - cpu_before.0,
        cpu_seconds(None) - cpu_before.1,
    );
    let total: usize = bodies.iter().map(Bytes::len).sum();
    // Release the round: idle workers and the blocker leave, the round closes.
    for id in idle.iter().map(String::as_str).chain(["blocker"]) {
        post_json(http, &format!("{url}/deregister"), json!({"worker_id": id})).await;
    }
    for upload in uploads {
        upload.await.expect("upload task");
    }
    let status = get_status(http, url).await;
    assert_eq!(status.sync_round, round + 1, "the round closed");
    let step = status.last_outer_step_seconds.expect("an outer step ran");
    for id in idle.iter().map(String::as_str).chain(["blocker"]) {
        post_json(http, &format!("{url}/register"), json!({"worker_id": id})).await;
    }
    let publish = status
        .last_publish_seconds
        .expect("the new parameters were published");
    RoundMeasure {
        rate: total as f64 / elapsed,
        step,
        publish,
        coordinator_cpu: coordinator_cpu / total as f64,
        worker_cpu: worker_cpu / total as f64,
    }
}

/// One worker's ingest over TLS (rustls, ring; the client trusts a test CA), median of
/// the repetitions, with a blocker keeping each round open as in [`ingest_bench`]; and the
/// CPU both sides spent per byte.
async fn tls_ingest_bench(root: &Path, params: usize) -> (f64, CpuPerByte) {
    let dir = tempfile::tempdir_in(root).expect("temporary directory");
    let ca = TestCa::new("bench CA");
    let server = ca.server(&["127.0.0.1"]);
    std::fs::write(dir.path().join("server.pem"), &server.cert).expect("certificate");
    std::fs::write(dir.path().join("server.key"), &server.key).expect("key");
    let coordinator = start_coordinator(
        dir.path(),
        params,
        "training: {heartbeat_timeout_seconds: 3600, sync_timeout_seconds: 3600, \
         download_dtype: bf16}\n\
         checkpoint: {every_rounds: 0}\n\
         tls: {cert: server.pem, key: server.key}\n",
    );
    diloco_client::coordinator_client::install_crypto_provider();
    let root_certificate =
        reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).expect("CA certificate");
    let http = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(root_certificate)
        .build()
        .expect("TLS client");
    let url = &coordinator.url;
    for id in ["w0", "blocker"] {
        post_json(&http, &format!("{url}/register"), json!({"worker_id": id})).await;
    }
    let body = upload_body("w0", &pseudo_gradient(params));
    let (mut rates, mut coordinator_cpu, mut worker_cpu) = (Vec::new(), Vec::new(), Vec::new());
    for repetition in 0..REPETITIONS {
        let measure = one_round(&http, &coordinator, std::slice::from_ref(&body), &[]).await;
        eprintln!(
            "  round {repetition}, 1 worker over TLS: {:.0} MB/s",
            measure.rate / MB
        );
        rates.push(measure.rate);
        coordinator_cpu.push(measure.coordinator_cpu * 1e9);
        worker_cpu.push(measure.worker_cpu * 1e9);
    }
    let cpu = CpuPerByte {
        coordinator: median(coordinator_cpu),
        worker: median(worker_cpu),
    };
    (median(rates), cpu)
}

/// Peak RSS of a fresh coordinator through two rounds of `workers` concurrent uploads.
async fn memory_bench(root: &Path, params: usize, workers: usize) -> u64 {
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

// ---------------------------------------------------------------------------------------
// The worker SDKs
// ---------------------------------------------------------------------------------------

/// Rows and columns of each matrix of the SDK benchmark's model.
const SDK_TENSOR_SHAPE: [usize; 2] = [2048, 1024];
const SDK_CONFIG: &str = "training: {heartbeat_timeout_seconds: 3600, sync_timeout_seconds: 3600, \
                          download_dtype: bf16}\n\
                          checkpoint: {every_rounds: 0}\n";

struct SdkUpload {
    upload_bytes: usize,
    raw: f64,
    rust: f64,
    python: f64,
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
/// validated and folded the upload, while a blocker keeps the round open as in
/// [`one_round`]; then the blocker leaves, the round closes, and it rejoins. The Rust client
/// runs here, the Python SDK in `python/benchmarks/upload_bench.py`; the baseline is a raw
/// loopback TCP copy of a frame of the same size.
async fn sdk_upload_bench(root: &Path, params: usize) -> SdkUpload {
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
                .map(|_| raw_tcp_bytes_per_second(&payload, 1, Landing::Memory, &mut landing))
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
