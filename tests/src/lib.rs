//! Fixtures for the end-to-end tests in `tests/tests/`: the real local control plane they run
//! on, helpers to get a client and a namespace of one's own, the workspace's binaries, and
//! coordinator and worker processes.

pub mod binaries;
pub mod frames;
pub mod local_cluster;
pub mod pki;
pub mod processes;

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
