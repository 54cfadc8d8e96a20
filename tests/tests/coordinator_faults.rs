//! A worker killed with SIGKILL in the middle of its upload: the barrier releases after the
//! heartbeat timeout, and the partial upload contributes nothing — the new parameters are
//! exactly the outer step over the other workers' pseudo-gradients.

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
