//! Ingest: workers uploading bf16 pseudo-gradients, timed from the first byte sent until the
//! coordinator has received, validated and folded every upload, against raw loopback TCP
//! copies of as many bytes (1 and 4 streams), in clear and over TLS; and the outer step and
//! publication of the rounds it closes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use diloco_tests::get_status;
use diloco_tests::pki::TestCa;
use diloco_tests::processes::{CoordinatorProcess, cpu_seconds};
use serde_json::{Value, json};

use crate::baselines::{Landing, raw_tcp_bytes_per_second};
use crate::pinning::{CoreSplit, ProcessPin};
use crate::setup::{
    INGEST_CONFIG, post_json, pseudo_gradient, start_coordinator, submit, upload_body,
};
use crate::{MB, REPETITIONS, median};

/// Ingest rates (bytes per second) against their raw baselines, and what the rounds cost.
pub struct Ingest {
    pub upload_bytes: usize,
    pub raw_1: f64,
    pub discard_1: f64,
    pub ours_1: f64,
    pub raw_4: f64,
    pub discard_4: f64,
    pub ours_4: f64,
    pub outer_step_seconds: f64,
    pub publish_seconds: f64,
    /// CPU nanoseconds per uploaded byte, coordinator and uploading side, 1 and 4 workers.
    pub cpu_1: CpuPerByte,
    pub cpu_4: CpuPerByte,
}

/// CPU nanoseconds per uploaded byte on each side of an upload.
#[derive(Clone, Copy)]
pub struct CpuPerByte {
    pub coordinator: f64,
    pub worker: f64,
}

impl CpuPerByte {
    pub fn json(&self) -> Value {
        json!({"coordinator": self.coordinator, "worker": self.worker})
    }
}

/// Ingest at 1 and 4 workers, interleaved with the raw baselines. A `blocker` worker that
/// never uploads keeps each round open, so the time measured is receiving, validating and
/// folding only; then it leaves, the round closes (outer step, responses) and it rejoins.
/// With `split`, the coordinator runs on its cores and this process (the senders) on the
/// others, and the raw baselines are pinned the same way.
pub async fn ingest_bench(root: &Path, params: usize, split: Option<&CoreSplit>) -> Ingest {
    let dir = tempfile::tempdir_in(root).expect("temporary directory");
    let coordinator = start_coordinator(dir.path(), params, INGEST_CONFIG);
    let _pinned = split.map(|split| ProcessPin::split(&coordinator, split));
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
            let split = split.cloned();
            let (raw, discard, buffers) = tokio::task::spawn_blocking(move || {
                let split = split.as_ref();
                let raw =
                    raw_tcp_bytes_per_second(&payload, n, Landing::Memory, &mut buffers, split);
                let discard =
                    raw_tcp_bytes_per_second(&payload, n, Landing::Discard, &mut buffers, split);
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
pub(crate) struct RoundMeasure {
    /// Bytes uploaded per second, from the first byte sent until all were folded.
    pub rate: f64,
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
pub(crate) async fn one_round(
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
/// With `split`, pinned as in [`ingest_bench`].
pub async fn tls_ingest_bench(
    root: &Path,
    params: usize,
    split: Option<&CoreSplit>,
) -> (f64, CpuPerByte) {
    let dir = tempfile::tempdir_in(root).expect("temporary directory");
    let ca = TestCa::new("bench CA");
    let server = ca.server(&["127.0.0.1"]);
    std::fs::write(dir.path().join("server.pem"), &server.cert).expect("certificate");
    std::fs::write(dir.path().join("server.key"), &server.key).expect("key");
    let coordinator = start_coordinator(
        dir.path(),
        params,
        &format!("{INGEST_CONFIG}tls: {{cert: server.pem, key: server.key}}\n"),
    );
    let _pinned = split.map(|split| ProcessPin::split(&coordinator, split));
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
