//! The whole path on the local control plane: the operator reconciles the example
//! `DiLoCoServer`, the real controller-manager turns its Deployment into a pod in a namespace
//! that enforces PodSecurity `restricted`, the pod runner starts the coordinator binary with
//! the pod's mounted config, token and certificate, and then:
//!
//! - the server becomes `Ready`, with the round and workers the operator read from the
//!   coordinator's `/status` over mTLS with its own client certificate;
//! - a worker using only the published worker bundle (`token`, `ca.crt`, `endpoints.json`)
//!   reaches the coordinator over verified TLS;
//! - a token rotation reaches the running coordinator: the new token works within seconds,
//!   the old one keeps working for the grace period, and the coordinator is not restarted;
//! - the example worker trains from the bundle alone (`--credentials-dir`, the Service names
//!   resolved to the pod with `--resolve`), on both planes, and the operator's status follows
//!   the rounds.

use std::collections::BTreeMap;
use std::time::Duration;

use diloco_crds::DiLoCoServer;
use diloco_tests::LocalCluster;
use diloco_tests::kube_helpers::{apply_server, condition, install_crd, wait_until};
use diloco_tests::operator_process::OperatorProcess;
use diloco_tests::pod_runner::{PodRunner, RunningPod};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

async fn secret_data(client: &Client, namespace: &str, name: &str) -> BTreeMap<String, String> {
    Api::<Secret>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap()
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
        .collect()
}

/// A worker's HTTP client built from the worker bundle alone: it trusts the bundle's CA and
/// resolves the control Service's name to the pod (there is no cluster DNS here).
fn worker_client(
    bundle: &BTreeMap<String, String>,
    host: &str,
    pod: &RunningPod,
) -> reqwest::Client {
    diloco_client::coordinator_client::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .resolve(host, std::net::SocketAddr::new(pod.ip.into(), 8512));
    for ca in reqwest::Certificate::from_pem_bundle(bundle["ca.crt"].as_bytes()).unwrap() {
        builder = builder.add_root_certificate(ca);
    }
    builder.build().unwrap()
}

async fn status_code(http: &reqwest::Client, url: &str, token: Option<&str>) -> u16 {
    let mut request = http.get(format!("{url}/status"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_example_runs_ready_and_follows_a_token_rotation_without_a_restart() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crd(&client).await;
    let namespace = cluster.namespace(&client, "op-e2e").await.unwrap();
    Api::<Namespace>::all(client.clone())
        .patch(
            &namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted"
            }}})),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runner = PodRunner::start(client.clone(), &namespace, dir.path())
        .await
        .unwrap();
    let operator = OperatorProcess::start(cluster.kubeconfig(), &namespace, dir.path(), &[]);

    let example = std::fs::read_to_string(
        diloco_tests::local_cluster::repo_root().join("examples/diloco.yaml"),
    )
    .unwrap();
    let example: serde_json::Value = serde_norway::from_str(&example).unwrap();
    apply_server(
        &client,
        &namespace,
        "llm",
        json!({}),
        example["spec"].clone(),
    )
    .await;

    let pod = runner
        .wait_ready(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the coordinator pod did not become ready: {e:#}\noperator log:\n{}",
                operator.log_text()
            )
        });
    let servers: Api<DiLoCoServer> = Api::namespaced(client.clone(), &namespace);
    let server = wait_until(Duration::from_secs(30), "Ready=True", || async {
        let server = servers.get("llm").await.ok()?;
        (condition(&server, "Ready")?.status == "True").then_some(server)
    })
    .await;
    let available = condition(&server, "CoordinatorAvailable").unwrap();
    assert!(
        available
            .message
            .contains("coordinator running and answering /status"),
        "the operator read /status over mTLS: {available:?}"
    );
    assert_eq!(
        server
            .status
            .as_ref()
            .unwrap()
            .coordinator
            .as_ref()
            .unwrap()
            .round,
        0
    );

    let bundle = secret_data(&client, &namespace, "llm-worker-credentials").await;
    let endpoints: serde_json::Value = serde_json::from_str(&bundle["endpoints.json"]).unwrap();
    let control = endpoints["control"].as_str().unwrap().to_string();
    let host = format!("llm-control.{namespace}.svc");
    let http = worker_client(&bundle, &host, &pod);
    assert_eq!(
        status_code(&http, &control, Some(&bundle["token"])).await,
        200
    );
    assert_eq!(status_code(&http, &control, None).await, 401);
    assert_eq!(
        status_code(&http, &control, Some("not-the-token")).await,
        401
    );

    // Rotate: the worker bundle follows, the running coordinator accepts the new token.
    let old = bundle["token"].clone();
    apply_server(
        &client,
        &namespace,
        "llm",
        json!({"diloco.dev/rotate-token": "e2e-1"}),
        example["spec"].clone(),
    )
    .await;
    let rotated = wait_until(
        Duration::from_secs(10),
        "a rotated token in the bundle",
        || async {
            let bundle = secret_data(&client, &namespace, "llm-worker-credentials").await;
            (bundle["token"] != old).then_some(bundle)
        },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the new token accepted",
        || async {
            (status_code(&http, &control, Some(&rotated["token"])).await == 200).then_some(())
        },
    )
    .await;
    assert_eq!(
        status_code(&http, &control, Some(&old)).await,
        200,
        "the previous token works during the grace period"
    );
    let now = runner
        .pods()
        .into_iter()
        .find(|p| p.name == pod.name)
        .expect("the same pod still runs");
    assert_eq!(now.restart_count, 0, "the coordinator was not restarted");
    assert_eq!(now.pid, pod.pid);
    let log = now.log();
    assert!(
        !log.contains(&old) && !log.contains(&rotated["token"]),
        "no token in the coordinator log"
    );
    let operator_log = operator.log_text();
    assert!(!operator_log.contains(&old) && !operator_log.contains(&rotated["token"]));

    let rounds = train_from_bundle(&rotated, &namespace, &pod, dir.path());
    assert_eq!(rounds, 2, "the example worker trained two rounds");
    wait_until(
        Duration::from_secs(20),
        "status showing the rounds",
        || async {
            let server = servers.get("llm").await.ok()?;
            (server.status?.coordinator?.round >= 2).then_some(())
        },
    )
    .await;
}

/// Runs `diloco-example-worker` for two rounds with the bundle written to a directory (as a
/// kubelet mounts a Secret) and returns the rounds it reported.
fn train_from_bundle(
    bundle: &BTreeMap<String, String>,
    namespace: &str,
    pod: &RunningPod,
    dir: &std::path::Path,
) -> usize {
    let mounted = dir.join("worker-credentials");
    std::fs::create_dir_all(&mounted).unwrap();
    for (key, value) in bundle {
        std::fs::write(mounted.join(key), value).unwrap();
    }
    let output =
        std::process::Command::new(diloco_tests::workspace_binary("diloco-example-worker"))
            .arg("--credentials-dir")
            .arg(&mounted)
            .args([
                "--resolve",
                &format!("llm-control.{namespace}.svc={}", pod.ip),
            ])
            .args(["--resolve", &format!("llm-bulk.{namespace}.svc={}", pod.ip)])
            .args(["--worker-id", "bundle-worker", "--rounds", "2"])
            .env_remove("DILOCO_TOKEN")
            .env_remove("DILOCO_TOKEN_FILE")
            .output()
            .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the example worker failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .filter(|line| line.contains("\"event\":\"round\""))
        .count()
}
