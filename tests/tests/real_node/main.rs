//! The operator and the coordinator as they run on a cluster: on a real node (kubelet,
//! containerd, kube-proxy, CoreDNS, kube-router, local-path; `scripts/local-cluster up
//! --node`), the operator installed with the chart as pods from its image, the coordinator pod
//! started by the kubelet from the coordinator image, workers as pods from the worker image.
//! One node serves every test of this binary (the image import is paid once); each test has
//! namespaces and an operator release of its own.
//!
//! - `admission`: PodSecurity `restricted`, kubelet probes, the audit volume across pods;
//! - `network_policies`: the operator's NetworkPolicies, shown by connections;
//! - `operator_pods`: leader election between two operator pods;
//! - `images`: what the images run as and carry;
//! - `startup_failure`: a node that cannot start fails with its log, leaving nothing behind;
//! - `training`: operator → coordinator → a worker pod trains from the bundle; rotation.

mod admission;
mod images;
mod network_policies;
mod operator_pods;
mod startup_failure;
mod training;

use std::time::Duration;

use diloco_crds::DiLoCoServer;
use diloco_tests::kube_helpers::{apply_server, condition, wait_until};
use diloco_tests::real_node::RealNode;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Client;
use kube::api::Api;
use serde_json::json;

/// How long a new server may take to be Ready: certificates, the claim bound by local-path (a
/// helper pod makes the directory), the coordinator pod started and probed.
const SERVER_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The example server (`examples/diloco.yaml`) with the CPU-only coordinator image the node
/// has, merged with `extra` (JSON merge of the spec).
fn example_spec(node: &RealNode, extra: serde_json::Value) -> serde_json::Value {
    let example = std::fs::read_to_string(
        diloco_tests::local_cluster::repo_root().join("examples/diloco.yaml"),
    )
    .expect("examples/diloco.yaml");
    let example: serde_json::Value = serde_norway::from_str(&example).expect("YAML");
    let mut spec = example["spec"].clone();
    spec["image"] = json!(node.image("coordinator-cpu").reference);
    spec["imagePullPolicy"] = json!("IfNotPresent");
    merge(&mut spec, extra);
    spec
}

fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(base), serde_json::Value::Object(patch)) => {
            for (key, value) in patch {
                merge(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (base, patch) => *base = patch,
    }
}

/// Applies server `name` with `spec` and waits until it is Ready (the operator pod read the
/// coordinator's `/status` over mTLS); returns it.
async fn ready_server(
    node: &RealNode,
    client: &Client,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) -> DiLoCoServer {
    apply_server(client, namespace, name, json!({}), spec).await;
    let servers: Api<DiLoCoServer> = Api::namespaced(client.clone(), namespace);
    let deadline = std::time::Instant::now() + SERVER_READY_TIMEOUT;
    loop {
        let server = servers.get(name).await.expect("the server exists");
        let ready = condition(&server, "Ready").is_some_and(|c| c.status == "True");
        let answering = condition(&server, "CoordinatorAvailable")
            .is_some_and(|c| c.message.contains("answering /status"));
        if ready && answering {
            return server;
        }
        if std::time::Instant::now() > deadline {
            let pods = node
                .run(
                    node.kubectl()
                        .args(["get", "pods,pvc,events", "-n", namespace]),
                )
                .unwrap_or_default();
            panic!(
                "server {name} not Ready after {SERVER_READY_TIMEOUT:?}: {:?}\n{pods}",
                server.status.map(|s| s.conditions)
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The label selector of server `name`'s coordinator pods.
fn coordinator_selector(name: &str) -> String {
    format!(
        "app.kubernetes.io/name=diloco,app.kubernetes.io/instance={name},app.kubernetes.io/component=coordinator"
    )
}

/// The ClusterIP of Service `name`.
async fn cluster_ip(client: &Client, namespace: &str, name: &str) -> String {
    Api::<Service>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Service {name}: {e}"))
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a ClusterIP")
}

/// The pod's IP.
fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a pod IP")
}

/// The pod's name.
fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// Waits until `check` holds, polling every half second (for things the node applies
/// asynchronously, such as a NetworkPolicy reaching kube-router's rules).
async fn eventually(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    wait_until(timeout, what, || {
        let holds = check();
        async move {
            if !holds {
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
            holds.then_some(())
        }
    })
    .await;
}
