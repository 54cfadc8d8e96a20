//! Shared by the upload refusal tests: what a refused upload must leave unchanged, and a
//! harness that submits a body, checks the status and the JSON error, and compares.

use std::collections::BTreeMap;
use std::path::Path;

use diloco_client::wire::dtype::WireDtype;
use diloco_client::wire::layout::ModelLayout;
use diloco_client::wire::safetensors;
use diloco_tests::get_status;
use diloco_tests::processes::CoordinatorProcess;
use serde_json::Value;

/// The model these tests train: `w` [4, 8] and `b` [8].
pub fn model() -> ModelLayout {
    ModelLayout::new(vec![("w".into(), vec![4, 8]), ("b".into(), vec![8])]).unwrap()
}

/// The initial parameters, in the layout's order (b, then w): 0.0, 0.1, …, 3.9.
pub fn initial_values() -> Vec<f32> {
    (0..40).map(|i| i as f32 / 10.0).collect()
}

/// Starts a coordinator in `dir` on [`model`] from [`initial_values`] (fp32 safetensors,
/// returned), `settings` being the rest of its configuration.
pub fn start(dir: &Path, settings: &str) -> (CoordinatorProcess, Vec<u8>) {
    let blob = safetensors::encode(
        &model(),
        &initial_values(),
        WireDtype::Fp32,
        &BTreeMap::new(),
    );
    std::fs::write(dir.join("init.safetensors"), &blob).unwrap();
    let config = format!("model: {{initial_parameters: init.safetensors}}\n{settings}");
    (CoordinatorProcess::start(dir, &config), blob)
}

/// What must not change: parameter bytes, round, registered workers, folded submissions.
#[derive(Debug, PartialEq)]
pub struct Observed {
    pub params: Vec<u8>,
    pub round: u64,
    pub registered: Vec<String>,
    pub pending: Vec<String>,
}

pub struct Harness {
    pub http: reqwest::Client,
    pub url: String,
}

impl Harness {
    pub async fn observe(&self) -> Observed {
        let params = self
            .http
            .get(format!("{}/global_params", self.url))
            .send()
            .await
            .unwrap();
        let params = params.bytes().await.unwrap().to_vec();
        let status = get_status(&self.http, &self.url).await;
        Observed {
            params,
            round: status.sync_round,
            registered: status.workers.into_keys().collect(),
            pending: status.pending_submissions,
        }
    }

    pub async fn submit(&self, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/submit_pseudograd", self.url))
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Submits `body`, expects `status` with a JSON error mentioning `needle`, and checks
    /// that nothing observable changed.
    pub async fn refused(&self, what: &str, body: Vec<u8>, status: u16, needle: &str) {
        let before = self.observe().await;
        let (got, reply) = self.submit(body).await;
        assert_eq!(got, status, "{what}: {reply}");
        let error = reply["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no JSON error in {reply}"));
        assert!(
            error.contains(needle),
            "{what}: {error:?} should mention {needle:?}"
        );
        assert_eq!(
            self.observe().await,
            before,
            "{what} changed the coordinator's state"
        );
    }
}
