//! The whole path on the real node: the chart's operator pod reconciles the example
//! `DiLoCoServer` in a `restricted` namespace, the kubelet runs the coordinator pod from its
//! image, and then:
//!
//! - the server becomes `Ready`, with the round the operator pod read from the coordinator's
//!   `/status` over mTLS with its own client certificate;
//! - a client holding only the published worker bundle (`token`, `ca.crt`, `endpoints.json`)
//!   reaches the coordinator over verified TLS from the host, through the control Service;
//! - a token rotation reaches the running coordinator: the new token works within seconds,
//!   the old one keeps working for the grace period, the container is not restarted, and
//!   neither token shows in the coordinator's or the operator's log;
//! - a worker pod from the worker image, labelled as the server's worker and mounting the
//!   bundle Secret, trains by the Service names (cluster DNS, kube-proxy, NetworkPolicy), and
//!   the operator's status follows the rounds.

use std::collections::BTreeMap;
use std::time::Duration;

use diloco_crds::DiLoCoServer;
use diloco_tests::kube_helpers::{apply_server, wait_until};
use diloco_tests::node_pods::{logs, ready_pod, restricted_container_security, wait_finished};
use diloco_tests::real_node::RealNode;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::{cluster_ip, coordinator_selector, example_spec, pod_name, ready_server};

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

/// The container id and restart count of the coordinator container.
fn container_state(pod: &Pod) -> (Option<String>, i32) {
    let status = &pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    (status.container_id.clone(), status.restart_count)
}

/// Runs the example worker as a pod for `rounds` rounds with the worker bundle mounted, as a
/// user's training job would; returns its JSON lines once it has finished.
async fn train_in_a_pod(
    node: &RealNode,
    client: &Client,
    namespace: &str,
    rounds: u32,
) -> Vec<serde_json::Value> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bundle-worker", "labels": {"diloco.dev/server": "llm"}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "worker",
                "image": node.image("worker-cpu").reference,
                "imagePullPolicy": "IfNotPresent",
                "args": ["--credentials-dir", "/var/run/diloco/credentials",
                         "--worker-id", "bundle-worker", "--rounds", rounds.to_string()],
                "securityContext": restricted_container_security(),
                "volumeMounts": [{"name": "credentials", "mountPath": "/var/run/diloco/credentials", "readOnly": true}],
            }],
            "volumes": [{"name": "credentials", "secret": {"secretName": "llm-worker-credentials"}}],
        },
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    let phase = wait_finished(client, namespace, "bundle-worker", Duration::from_secs(180)).await;
    let output = logs(client, namespace, "bundle-worker", "worker").await;
    assert_eq!(phase, "Succeeded", "the worker pod failed:\n{output}");
    output
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn a_worker_pod_trains_from_the_bundle_and_a_rotation_reaches_the_running_coordinator() {
    let node = RealNode::shared();
    let _turn = node.one_test_at_a_time().await;
    let client = node.client().await.unwrap();
    let namespace = node
        .restricted_namespace(&client, "node-training")
        .await
        .unwrap();
    node.install_operator(&namespace, "diloco-operator", 1);
    let spec = example_spec(node, json!({}));
    let server = ready_server(node, &client, &namespace, "llm", spec.clone()).await;
    assert_eq!(server.status.unwrap().coordinator.unwrap().round, 0);
    let coordinator = ready_pod(
        &client,
        &namespace,
        &coordinator_selector("llm"),
        Duration::from_secs(10),
    )
    .await;

    let bundle = secret_data(&client, &namespace, "llm-worker-credentials").await;
    let endpoints: serde_json::Value = serde_json::from_str(&bundle["endpoints.json"]).unwrap();
    let control = endpoints["control"].as_str().unwrap().to_string();
    let host = format!("llm-control.{namespace}.svc");
    assert_eq!(control, format!("https://{host}:8512"));
    let forward = node.forward(&[(&cluster_ip(&client, &namespace, "llm-control").await, 8512)]);
    diloco_client::coordinator_client::install_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .resolve(
            &host,
            std::net::SocketAddr::new(forward.address.into(), 8512),
        );
    for ca in reqwest::Certificate::from_pem_bundle(bundle["ca.crt"].as_bytes()).unwrap() {
        builder = builder.add_root_certificate(ca);
    }
    let http = builder.build().unwrap();
    assert_eq!(
        status_code(&http, &control, Some(&bundle["token"])).await,
        200
    );
    assert_eq!(status_code(&http, &control, None).await, 401);
    assert_eq!(
        status_code(&http, &control, Some("not-the-token")).await,
        401
    );

    // Rotate: the bundle follows, the running coordinator accepts the new token.
    let old = bundle["token"].clone();
    apply_server(
        &client,
        &namespace,
        "llm",
        json!({"diloco.dev/rotate-token": "node-1"}),
        spec,
    )
    .await;
    let rotated = wait_until(
        Duration::from_secs(20),
        "a rotated token in the bundle",
        || async {
            let bundle = secret_data(&client, &namespace, "llm-worker-credentials").await;
            (bundle["token"] != old).then_some(bundle)
        },
    )
    .await;
    // The kubelet refreshes mounted Secrets on its sync period (10 s on this node).
    wait_until(
        Duration::from_secs(120),
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
    let now = Api::<Pod>::namespaced(client.clone(), &namespace)
        .get(&pod_name(&coordinator))
        .await
        .unwrap();
    assert_eq!(
        container_state(&now),
        (container_state(&coordinator).0, 0),
        "the same container, never restarted"
    );
    let coordinator_log = logs(&client, &namespace, &pod_name(&coordinator), "coordinator").await;
    assert!(
        coordinator_log.contains("listening"),
        "the log is the coordinator's: {coordinator_log}"
    );
    let operator = Api::<Pod>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().labels("app.kubernetes.io/name=diloco-operator"))
        .await
        .unwrap()
        .items;
    let operator_log = logs(&client, &namespace, &pod_name(&operator[0]), "operator").await;
    assert!(
        operator_log.contains("minted the bearer token"),
        "the log is the operator's: {operator_log}"
    );
    for token in [&old, &rotated["token"]] {
        assert!(
            !coordinator_log.contains(token.as_str()) && !operator_log.contains(token.as_str()),
            "a token in a log"
        );
    }

    let lines = train_in_a_pod(node, &client, &namespace, 2).await;
    let rounds: Vec<_> = lines.iter().filter(|l| l["event"] == "round").collect();
    assert_eq!(rounds.len(), 2, "{lines:?}");
    assert!(
        rounds.iter().all(|r| r["contributed"] == true),
        "{rounds:?}"
    );
    let servers: Api<DiLoCoServer> = Api::namespaced(client.clone(), &namespace);
    // The operator's poller reads /status every 15 s.
    wait_until(
        Duration::from_secs(40),
        "status showing the rounds",
        || async { (servers.get("llm").await.ok()?.status?.coordinator?.round >= 2).then_some(()) },
    )
    .await;
}
