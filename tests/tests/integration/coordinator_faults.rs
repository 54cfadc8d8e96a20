//! A worker killed with SIGKILL in the middle of its upload: the barrier releases after the
//! heartbeat timeout, and the partial upload contributes nothing — the new parameters are
//! exactly the outer step over the other workers' pseudo-gradients. And a command relayed to
//! a worker (`save_and_stop`, `abort`) is acted on once, even when the heartbeat reply that
//! carried it is lost.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use diloco_client::tensors::decode_safetensors;
use diloco_client::wire::dtype::WireDtype;
use diloco_client::wire::layout::ModelLayout;
use diloco_client::wire::safetensors;
use diloco_tests::frames::{RawTensor, bf16_bytes, frame};
use diloco_tests::get_status;
use diloco_tests::processes::CoordinatorProcess;
use serde_json::json;

const ROWS: usize = 512;
const COLS: usize = 1024;

fn pseudo_gradient(scale: f32) -> Vec<f32> {
    // Values exact in bf16, different per element and per worker.
    (0..ROWS * COLS)
        .map(|i| scale * ((i % 64) as f32 - 32.0) / 64.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_upload_contributes_nothing_and_releases_the_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let layout = ModelLayout::new(vec![("w".into(), vec![ROWS, COLS])]).unwrap();
    let initial: Vec<f32> = (0..ROWS * COLS).map(|i| (i % 97) as f32 * 0.01).collect();
    std::fs::write(
        dir.path().join("init.safetensors"),
        safetensors::encode(&layout, &initial, WireDtype::Fp32, &BTreeMap::new()),
    )
    .unwrap();
    let coordinator = CoordinatorProcess::start(
        dir.path(),
        "model: {initial_parameters: init.safetensors}\n\
         training:\n  heartbeat_timeout_seconds: 3\n  \
         outer_optimizer: {lr: 1.0, momentum: 0.0, nesterov: false}\n",
    );
    let http = diloco_tests::http_client();
    let url = coordinator.url.clone();
    for id in ["a", "b", "doomed"] {
        let r = http
            .post(format!("{url}/register"))
            .json(&json!({"worker_id": id}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // a and b stay alive; doomed never sends a heartbeat.
    let beating = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            loop {
                for id in ["a", "b"] {
                    let _ = http
                        .post(format!("{url}/heartbeat"))
                        .json(&json!({"worker_id": id}))
                        .send()
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    // doomed uploads slowly (64 kB/s of a 1 MB frame) and is killed mid-way.
    let doomed_frame = dir.path().join("doomed.frame");
    let upload = |id: &str, scale: f32| {
        frame(
            id,
            &[RawTensor {
                name: "w",
                dtype: "BF16",
                shape: &[ROWS, COLS],
                data: bf16_bytes(&pseudo_gradient(scale)),
            }],
        )
    };
    std::fs::write(&doomed_frame, upload("doomed", 100.0)).unwrap();
    let mut curl = Command::new("curl")
        .args(["--silent", "--limit-rate", "64k", "--data-binary"])
        .arg(format!("@{}", doomed_frame.display()))
        .arg(format!("{url}/submit_pseudograd"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let receiving = || async { get_status(&http, &url).await.receiving == ["doomed"] };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !receiving().await {
        assert!(Instant::now() < deadline, "the doomed upload never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    curl.kill().unwrap(); // SIGKILL
    curl.wait().unwrap();

    let submit = |id: &'static str, scale: f32| {
        let (http, url, body) = (http.clone(), url.clone(), upload(id, scale));
        tokio::spawn(async move {
            http.post(format!("{url}/submit_pseudograd"))
                .body(body)
                .send()
                .await
                .unwrap()
        })
    };
    let started = Instant::now();
    let (a, b) = (submit("a", 1.0), submit("b", 0.5));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let waited = started.elapsed();
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    assert!(
        waited >= Duration::from_secs(1),
        "the round waited for the eviction ({waited:?})"
    );
    let (a, b) = (a.bytes().await.unwrap(), b.bytes().await.unwrap());
    assert_eq!(a, b, "both workers get the same parameters");
    beating.abort();

    // lr 1, no momentum: θ' = θ − (g_a + g_b)/2, in fp32, one rounding per operation.
    let (ga, gb) = (pseudo_gradient(1.0), pseudo_gradient(0.5));
    let theta = decode_safetensors(&a).unwrap();
    let got: Vec<f32> = Vec::try_from(&theta["w"].flatten(0, -1)).unwrap();
    for i in 0..initial.len() {
        let expected = ((ga[i] + gb[i]) / 2.0).mul_add(-1.0, initial[i]);
        assert_eq!(
            got[i].to_bits(),
            expected.to_bits(),
            "element {i}: {} vs {expected}",
            got[i]
        );
    }
    let status = get_status(&http, &url).await;
    assert_eq!(status.sync_round, 1);
    assert_eq!(status.total_worker_deaths, Some(1), "{status:?}");
    assert!(
        !status.workers.contains_key("doomed"),
        "doomed was evicted: {status:?}"
    );
    assert!(coordinator.log().contains("worker evicted"));
}

/// A loopback TCP proxy that forwards both ways but, once, drops the connection instead of
/// forwarding a response that relays a command: the heartbeat reply is lost on the way.
struct LossyProxy {
    url: String,
    dropped: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl LossyProxy {
    async fn start(upstream: &str) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.to_string();
        let dropped = Arc::new(AtomicUsize::new(0));
        let armed = Arc::new(AtomicBool::new(true));
        let counter = dropped.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                });
                let (armed, counter) = (armed.clone(), counter.clone());
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 64 << 10];
                    loop {
                        let n = match server_read.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let marker = b"\"command\":";
                        let relays = buffer[..n].windows(marker.len()).any(|w| w == marker);
                        if relays && armed.swap(false, Ordering::SeqCst) {
                            counter.fetch_add(1, Ordering::SeqCst);
                            break; // both halves dropped: the client sees the connection close
                        }
                        if client_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Self { url, dropped }
    }

    fn dropped(&self) -> usize {
        self.dropped.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Short rounds, and a heartbeat every second.
const COMMANDS_CONFIG: &str = "training: {sync_every: 20, heartbeat_timeout_seconds: 4}\n";
/// More rounds than the test waits for: only a relayed command ends the worker early.
const MANY_ROUNDS: usize = 400;

/// The example worker `w0` at `url`, saving its parameters to `saved` when asked.
fn commanded_worker(url: &str, saved: &std::path::Path) -> diloco_tests::processes::WorkerProcess {
    let rounds = MANY_ROUNDS.to_string();
    let saved = saved.to_str().unwrap();
    diloco_tests::processes::WorkerProcess::start(
        "w0",
        &["--url", url, "--rounds", &rounds, "--save-params", saved],
    )
}

async fn queue_command(url: &str, command: &str, worker_id: &str) {
    let http = diloco_tests::http_client();
    let response = http
        .post(format!("{url}/control/command"))
        .json(&json!({"command": command, "worker_id": worker_id}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn wait_for_round(url: &str, round: u64) {
    let http = diloco_tests::http_client();
    let deadline = Instant::now() + Duration::from_secs(120);
    while get_status(&http, url).await.sync_round < round {
        assert!(Instant::now() < deadline, "round {round} never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Rust worker acts on `save_and_stop` like the Python SDK: it saves and leaves. The
/// heartbeat reply carrying the command is lost on the way (the proxy drops it); the worker's
/// next beat still acknowledges the previous command, so the coordinator sends it again and
/// the worker acts on it exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn save_and_stop_survives_a_lost_heartbeat_reply_and_the_worker_saves_and_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = CoordinatorProcess::start(dir.path(), COMMANDS_CONFIG);
    let proxy = LossyProxy::start(coordinator.address()).await;
    let saved = dir.path().join("saved.safetensors");
    let worker = commanded_worker(&proxy.url, &saved);
    wait_for_round(&coordinator.url, 2).await;
    queue_command(&coordinator.url, "save_and_stop", "w0").await;

    let lines = worker.finish(Duration::from_secs(180));
    assert_eq!(proxy.dropped(), 1, "a reply relaying the command was lost");
    let commands = diloco_tests::processes::events(&lines, "command");
    assert_eq!(commands.len(), 1, "acted on once: {commands:?}");
    assert_eq!(commands[0]["command"], "save_and_stop");
    let rounds = diloco_tests::processes::events(&lines, "round");
    assert!(
        rounds.len() < MANY_ROUNDS,
        "it stopped early: {} rounds",
        rounds.len()
    );
    assert_eq!(diloco_tests::processes::events(&lines, "done").len(), 1);
    let params = decode_safetensors(&std::fs::read(&saved).unwrap()).unwrap();
    assert!(!params.is_empty(), "the parameters were saved");
    let http = diloco_tests::http_client();
    assert!(
        get_status(&http, &coordinator.url).await.workers.is_empty(),
        "the worker left the run"
    );
}

/// `abort` stops the worker without saving; it leaves the run.
#[tokio::test(flavor = "multi_thread")]
async fn abort_stops_the_worker_without_saving() {
    let dir = tempfile::tempdir().unwrap();
    let coordinator = CoordinatorProcess::start(dir.path(), COMMANDS_CONFIG);
    let saved = dir.path().join("saved.safetensors");
    let worker = commanded_worker(&coordinator.url, &saved);
    wait_for_round(&coordinator.url, 1).await;
    queue_command(&coordinator.url, "abort", "w0").await;
    let lines = worker.finish(Duration::from_secs(180));
    assert_eq!(
        diloco_tests::processes::events(&lines, "aborted").len(),
        1,
        "{lines:?}"
    );
    assert!(diloco_tests::processes::events(&lines, "done").is_empty());
    assert!(!saved.exists(), "abort saves nothing");
    let http = diloco_tests::http_client();
    assert!(get_status(&http, &coordinator.url).await.workers.is_empty());
}
