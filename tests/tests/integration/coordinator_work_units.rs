//! Work-unit dispatch and run statistics on a real coordinator process, over HTTP with bearer
//! tokens and real tensors: interleaved workers never get the same unit, a worker that leaves
//! takes its statistics' totals with it into the run (not out of it), and a restart from the
//! checkpoint neither issues a unit again nor forgets the statistics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use diloco_client::wire::dtype::WireDtype;
use diloco_client::wire::layout::ModelLayout;
use diloco_client::wire::safetensors;
use diloco_tests::frames::{RawTensor, bf16_bytes, frame};
use diloco_tests::processes::CoordinatorProcess;
use diloco_tests::tokens::TestTokens;
use serde_json::{Value, json};

const ROWS: usize = 64;
const COLS: usize = 32;

fn config(tokens: &TestTokens) -> String {
    format!(
        "auth: {{{}}}\n\
         model: {{initial_parameters: init.safetensors}}\n\
         checkpoint: {{dir: checkpoints, every_rounds: 1}}\n\
         audit: {{path: audit.jsonl}}\n",
        tokens.auth_keys()
    )
}

fn write_initial(dir: &Path) {
    let layout = ModelLayout::new(vec![("w".into(), vec![ROWS, COLS])]).unwrap();
    let values: Vec<f32> = (0..ROWS * COLS).map(|i| (i % 13) as f32 * 0.25).collect();
    std::fs::write(
        dir.join("init.safetensors"),
        safetensors::encode(&layout, &values, WireDtype::Fp32, &BTreeMap::new()),
    )
    .unwrap();
}

/// A client of one coordinator with one token.
struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn register(&self, worker_id: &str) {
        let response = self
            .http
            .post(format!("{}/register", self.url))
            .bearer_auth(&self.token)
            .json(&json!({"worker_id": worker_id}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let params = response.bytes().await.unwrap();
        assert!(params.len() > ROWS * COLS * 2, "real parameters came back");
    }

    async fn submit(&self, worker_id: &str) {
        let body = frame(
            worker_id,
            &[RawTensor {
                name: "w",
                dtype: "BF16",
                shape: &[ROWS, COLS],
                data: bf16_bytes(&vec![0.5; ROWS * COLS]),
            }],
        );
        let response = self
            .http
            .post(format!("{}/submit_pseudograd", self.url))
            .bearer_auth(&self.token)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
    }

    /// The next unit for `worker_id`, `None` once exhausted.
    async fn unit(&self, worker_id: &str) -> Option<u64> {
        let (status, reply) = self
            .post(
                "/work/request",
                json!({"worker_id": worker_id, "dataset_id": "tiny-abc", "shuffle_seed": 7}),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
        if reply == json!({"exhausted": true}) {
            return None;
        }
        Some(reply["unit_id"].as_u64().expect("a unit id"))
    }

    async fn beat(&self, worker_id: &str, tokens: u64, steps: u64) {
        let (status, reply) = self
            .post(
                "/heartbeat",
                json!({"worker_id": worker_id, "steps_per_second": 1.0,
                       "stats": {"tokens_total": tokens, "step_total": steps, "loss": 2.5}}),
            )
            .await;
        assert_eq!(status, 200, "{reply}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn units_are_issued_once_per_epoch_across_departures_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = TestTokens::write(dir.path());
    write_initial(dir.path());
    let mut coordinator = CoordinatorProcess::start(dir.path(), &config(&tokens));
    let api = Api {
        http: diloco_tests::http_client(),
        url: coordinator.url.clone(),
        token: tokens.worker.clone(),
    };
    api.register("a").await;
    api.register("b").await;
    let hint = json!({"length": 10_000, "path": "tiny", "split": "train"});
    for worker in ["a", "b"] {
        let (status, reply) = api
            .post(
                "/datasets/register",
                json!({"worker_id": worker, "dataset_id": "tiny-abc", "shuffle_seed": 7,
                       "hint": hint}),
            )
            .await;
        assert_eq!((status, reply), (200, json!({"total_units": 1024})));
    }

    // Interleaved requests: disjoint, ascending.
    let mut issued: Vec<(String, u64)> = Vec::new();
    for i in 0..100 {
        let worker = if i % 2 == 0 { "a" } else { "b" };
        issued.push((worker.into(), api.unit(worker).await.unwrap()));
    }
    let ids: Vec<u64> = issued.iter().map(|(_, u)| *u).collect();
    assert_eq!(ids, (0..100).collect::<Vec<_>>());
    for (worker, unit) in issued.iter().take(90) {
        let body = json!({"worker_id": worker, "dataset_id": "tiny-abc", "shuffle_seed": 7,
                          "unit_id": unit});
        assert_eq!(
            api.post("/work/complete", body).await,
            (200, json!({"ack": true}))
        );
    }

    // Statistics from both; then b leaves, holding units 91..99 of which 91, 93, … are its.
    api.beat("a", 1000, 10).await;
    api.beat("b", 500, 5).await;
    api.beat("a", 1600, 16).await;
    let (_, left) = api.post("/deregister", json!({"worker_id": "b"})).await;
    assert_eq!(left["status"], "ok");
    let (_, status) = api.get("/status").await;
    assert_eq!(
        status["aggregate_stats"]["total_tokens"], 2100.0,
        "b's tokens stay counted"
    );
    assert_eq!(status["aggregate_stats"]["total_steps"], 21.0);
    assert_eq!(status["aggregate_stats"]["num_reporting"], 1);

    // A round closes with a's real upload, so a checkpoint holds the queue and the stats.
    api.submit("a").await;
    let (_, history) = api.get("/stats_history").await;
    assert_eq!(history["count"], 3);
    assert_eq!(history["downsampled"], false);
    let totals: Vec<f64> = history["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["total_tokens"].as_f64().unwrap())
        .collect();
    assert_eq!(totals, vec![1000.0, 1500.0, 2100.0]);
    let (_, last) = api.get("/stats_history?max_points=1").await;
    assert_eq!(
        (last["count"].as_u64(), last["downsampled"].as_bool()),
        (Some(1), Some(true))
    );
    assert_eq!(
        last["records"][0]["total_tokens"], 2100.0,
        "the newest record is kept"
    );
    let (_, clamped) = api.get("/stats_history?max_points=-5").await;
    assert_eq!(clamped["count"], 1, "below 1 is clamped to 1");

    // b's held, never completed units stay issued: the queue never hands them out again.
    let (_, queue) = api
        .get("/work/queue?dataset_id=tiny-abc&shuffle_seed=7")
        .await;
    assert_eq!(queue["issued_count"], 100);
    assert_eq!(queue["completed_count"], 90);
    assert_eq!(
        queue["by_worker"]["b"],
        json!({"units_issued": 50, "units_completed": 45})
    );
    assert_eq!(queue["hint"], hint);

    // A restart (SIGTERM: a checkpoint at shutdown) resumes the queue and the statistics.
    assert!(coordinator.terminate().success());
    let coordinator = CoordinatorProcess::start(dir.path(), &config(&tokens));
    let api = Api {
        url: coordinator.url.clone(),
        ..api
    };
    let (_, queues) = api.get("/work/queues").await;
    assert_eq!(queues[0]["issued_count"], 100, "{queues}");
    assert!(
        queues[0].get("issued_bitmap_b64").is_none(),
        "the list has no bitmaps"
    );
    let (_, status) = api.get("/status").await;
    assert_eq!(status["aggregate_stats"]["total_tokens"], 2100.0);
    let (_, history) = api.get("/stats_history").await;
    assert_eq!(history["count"], 3);

    // The rest of the epoch: every unit exactly once over both lives of the coordinator.
    api.register("c").await;
    let mut all: BTreeSet<u64> = ids.into_iter().collect();
    while let Some(unit) = api.unit("c").await {
        assert!(all.insert(unit), "unit {unit} issued twice");
    }
    assert_eq!(all, (0..1024).collect::<BTreeSet<_>>());
    assert_eq!(api.unit("a").await, None, "exhausted for everyone");

    // A new epoch is a new seed: a fresh queue.
    let (status, _) = api
        .post(
            "/datasets/register",
            json!({"worker_id": "c", "dataset_id": "tiny-abc", "shuffle_seed": 8,
                   "hint": {"length": 10_000}}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, first) = api
        .post(
            "/work/request",
            json!({"worker_id": "c", "dataset_id": "tiny-abc", "shuffle_seed": 8}),
        )
        .await;
    assert_eq!(first, json!({"unit_id": 0}));
}
