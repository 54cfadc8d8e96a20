//! Fixtures for the end-to-end tests in `tests/tests/`: the real local control plane they run
//! on, helpers to get a client and a namespace of one's own, the workspace's binaries,
//! coordinator and worker processes, and a headless browser for the console's pages.

pub mod binaries;
pub mod browser;
pub mod chart;
pub mod console_fixture;
pub mod console_server;
pub mod frames;
pub mod kube_helpers;
pub mod local_cluster;
pub mod node_pods;
pub mod operator_process;
pub mod pki;
pub mod processes;
pub mod real_node;
pub mod reporting_worker;
pub mod service_accounts;
pub mod tokens;

pub use binaries::workspace_binary;
pub use local_cluster::LocalCluster;

/// A plain reqwest client for raw requests in tests (no proxy, ring crypto provider).
pub fn http_client() -> reqwest::Client {
    diloco_client::coordinator_client::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a reqwest client with defaults builds")
}

/// GETs `url` and parses the body as JSON, panicking (it is a test) on any failure.
pub async fn get_json(http: &reqwest::Client, url: &str) -> serde_json::Value {
    let response = http.get(url).send().await.expect("GET reaches the server");
    response.json().await.expect("the response is JSON")
}

/// The coordinator's `/status` at `{url}/status`, parsed as the contract's reply (so a test
/// breaks at build time when a field it reads is renamed).
pub async fn get_status(http: &reqwest::Client, url: &str) -> diloco_contract::api::StatusReply {
    let response = http
        .get(format!("{url}{}", diloco_contract::api::STATUS))
        .send()
        .await
        .expect("GET /status reaches the server");
    response.json().await.expect("the reply is a /status body")
}

/// The coordinator's Prometheus text at `{url}/metrics` (with `token` as bearer, if given),
/// as metric name → value for the unlabelled samples.
pub async fn metrics(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> std::collections::BTreeMap<String, f64> {
    let mut request = http.get(format!("{url}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let text = request
        .send()
        .await
        .expect("GET /metrics reaches the server")
        .text()
        .await
        .expect("a text body");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(name, value)| Some((name.to_string(), value.parse().ok()?)))
        .collect()
}

/// A token nobody could guess and that cannot appear anywhere by accident.
pub fn fresh_token(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{label}-{nanos:x}-{:x}", std::process::id())
}

/// `target/bench`, where benchmarks write their JSON summaries (created if missing).
pub fn bench_dir() -> std::path::PathBuf {
    let root = local_cluster::repo_root().join("target/bench");
    std::fs::create_dir_all(&root).expect("target/bench can be created");
    root
}
