//! Pods on the real node for tests: sleeping busybox clients to run connections from, an
//! ephemeral container inside another pod (its network namespace, its process namespace), and
//! waiting for pods to be Ready or done. Every pod is `restricted` (uid 65532, read-only root,
//! no capabilities, RuntimeDefault seccomp), so it runs in any test namespace.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::kube_helpers::wait_until;

/// How long a pod may take to start on the node (image already imported).
pub const POD_START_TIMEOUT: Duration = Duration::from_secs(90);

/// The restricted security context of every container the tests add.
pub fn restricted_container_security() -> serde_json::Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// Whether the pod's Ready condition is True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Starts pod `name` in `namespace` with `labels`: busybox sleeping for an hour, so tests can
/// `kubectl exec` connections from it, and serving HTTP on port 8080, so it is also something
/// to connect to. Waits until it runs.
pub async fn start_client_pod(
    client: &Client,
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    image: &str,
) {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 0,
            "containers": [{
                "name": "client",
                "image": image,
                "imagePullPolicy": "Never",
                "command": ["/bin/busybox", "sh", "-c",
                    "busybox httpd -p 8080 -h /bin && exec busybox sleep 3600"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "securityContext": restricted_container_security(),
            }],
        },
    }))
    .expect("a valid pod");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    pods.create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("create pod {namespace}/{name}: {e}"));
    wait_ready(client, namespace, name).await;
}

/// Waits until pod `name` is Ready; returns it.
pub async fn wait_ready(client: &Client, namespace: &str, name: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    wait_until(POD_START_TIMEOUT, &format!("pod {name} Ready"), || async {
        let pod = pods.get(name).await.ok()?;
        is_ready(&pod).then_some(pod)
    })
    .await
}

/// Waits until pod `name` has ended (Succeeded or Failed); returns its phase.
pub async fn wait_finished(
    client: &Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    wait_until(timeout, &format!("pod {name} to finish"), || async {
        let phase = pods.get(name).await.ok()?.status?.phase?;
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    })
    .await
}

/// The logs of `container` of pod `name` (through the kubelet).
pub async fn logs(client: &Client, namespace: &str, name: &str, container: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = kube::api::LogParams {
        container: Some(container.to_string()),
        ..kube::api::LogParams::default()
    };
    pods.logs(name, &params).await.unwrap_or_default()
}

/// The one live (not terminating) pod matching `selector`, if there is exactly one and it is
/// Ready.
pub async fn find_ready_pod(client: &Client, namespace: &str, selector: &str) -> Option<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .ok()?;
    let live: Vec<Pod> = list
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    match live.as_slice() {
        [pod] if is_ready(pod) => Some(pod.clone()),
        _ => None,
    }
}

/// [`find_ready_pod`], waiting up to `timeout`.
pub async fn ready_pod(client: &Client, namespace: &str, selector: &str, timeout: Duration) -> Pod {
    wait_until(timeout, &format!("one Ready pod {selector}"), || {
        find_ready_pod(client, namespace, selector)
    })
    .await
}

/// Adds ephemeral container `name` (busybox, sleeping) to `pod`, sharing the process namespace
/// of its container `target`: commands run in it (`kubectl exec -c name`) use the pod's
/// network exactly as the target does, and see the target's processes. Waits until it runs.
pub async fn add_probe_container(
    client: &Client,
    namespace: &str,
    pod: &str,
    target: &str,
    name: &str,
    image: &str,
) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let patch = json!({"spec": {"ephemeralContainers": [{
        "name": name,
        "image": image,
        "imagePullPolicy": "Never",
        "targetContainerName": target,
        "command": ["/bin/busybox", "sleep", "3600"],
        "securityContext": restricted_container_security(),
    }]}});
    pods.patch_ephemeral_containers(pod, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap_or_else(|e| panic!("add ephemeral container {name} to {pod}: {e}"));
    wait_until(
        POD_START_TIMEOUT,
        &format!("ephemeral container {name} running"),
        || async {
            let status = pods.get(pod).await.ok()?.status?;
            status
                .ephemeral_container_statuses?
                .iter()
                .find(|s| s.name == name)?
                .state
                .as_ref()?
                .running
                .as_ref()
                .map(|_| ())
        },
    )
    .await;
}
