//! The images as containerd runs them: the coordinator image starts as the unprivileged user
//! 65532 on a read-only root filesystem and finds libtorch; the operator image carries no
//! libtorch at all; the CPU-only variant the tests use leaves out exactly libtorch_cuda and
//! what only it needs.

use std::collections::BTreeSet;
use std::time::Duration;

use diloco_tests::node_pods::{add_probe_container, logs, wait_finished, wait_ready};
use diloco_tests::real_node::RealNode;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;

/// A pod running the coordinator image as the image says: no `runAsUser`, only
/// `runAsNonRoot` (the kubelet refuses to start an image whose user is root or not numeric),
/// a read-only root, no capabilities.
async fn start_coordinator_image(
    client: &Client,
    namespace: &str,
    name: &str,
    image: &str,
    args: &[&str],
) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "coordinator",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "args": args,
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volumeMounts": [{"name": "config", "mountPath": "/etc/coordinator"}],
            }],
            "volumes": [{"name": "config", "configMap": {"name": "coordinator"}}],
        },
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_coordinator_image_runs_as_65532_on_a_read_only_root_and_finds_libtorch() {
    let node = RealNode::shared();
    let _turn = node.one_test_at_a_time().await;
    let client = node.client().await.unwrap();
    let namespace = node
        .restricted_namespace(&client, "node-images")
        .await
        .unwrap();
    let image = &node.image("coordinator-cpu").reference;
    // A coordinator that keeps running: loopback only, so it needs no credentials.
    let config: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "coordinator"},
        "data": {"coordinator.yaml": "listen: 127.0.0.1:8512\nauth: {disabled: true}\n"},
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &config)
        .await
        .unwrap();

    start_coordinator_image(
        &client,
        &namespace,
        "check-device",
        image,
        &["--check-device"],
    )
    .await;
    let phase = wait_finished(&client, &namespace, "check-device", Duration::from_secs(90)).await;
    let output = logs(&client, &namespace, "check-device", "coordinator").await;
    assert_eq!(phase, "Succeeded", "--check-device failed: {output}");
    let device = output
        .split_whitespace()
        .find_map(|field| field.strip_prefix("device="))
        .unwrap_or_else(|| panic!("no device= in {output:?}"));
    assert!(["cpu", "cuda"].contains(&device), "{output}");
    assert!(output.contains("cuda_available="), "{output}");

    // The user and the root filesystem as the kernel has them, read from an ephemeral
    // container that shares the running coordinator's process namespace (its PID 1).
    start_coordinator_image(
        &client,
        &namespace,
        "running",
        image,
        &["--config", "/etc/coordinator/coordinator.yaml"],
    )
    .await;
    wait_ready(&client, &namespace, "running").await;
    add_probe_container(
        &client,
        &namespace,
        "running",
        "coordinator",
        "inspect",
        node.helper_image(),
    )
    .await;
    let (ok, seen) = node.exec(
        &namespace,
        "running",
        "inspect",
        "busybox tr '\\0' ' ' </proc/1/cmdline; echo; busybox grep -E '^(Uid|Gid):' /proc/1/status; \
         busybox awk '$5 == \"/\" {print \"root \" $6}' /proc/1/mountinfo",
    );
    assert!(ok, "{seen}");
    assert!(
        seen.contains("diloco-coordinator --config"),
        "PID 1 is the coordinator: {seen}"
    );
    assert!(seen.contains("Uid:\t65532\t65532\t65532\t65532"), "{seen}");
    assert!(seen.contains("Gid:\t65532\t65532\t65532\t65532"), "{seen}");
    let root_options = seen
        .lines()
        .find_map(|l| l.strip_prefix("root "))
        .unwrap_or_else(|| panic!("no root mount in {seen}"));
    assert!(
        root_options.split(',').any(|o| o == "ro"),
        "root mounted {root_options}"
    );
}

/// Every file path in the docker-archive `archive`, across its layers.
fn archive_files(archive: &std::path::Path) -> BTreeSet<String> {
    let script = r#"
        tar -tf "$1" | grep -E '^[0-9a-f]{64}\.tar$' | while read -r layer; do
            tar -xOf "$1" "$layer" | tar -t
        done"#;
    let output = std::process::Command::new("bash")
        .args(["-c", script, "archive-files"])
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn named<'a>(files: &'a BTreeSet<String>, name: &str) -> Vec<&'a String> {
    files
        .iter()
        .filter(|f| f.rsplit('/').next() == Some(name))
        .collect()
}

#[tokio::test]
async fn the_operator_image_has_no_libtorch_and_the_cpu_variant_leaves_out_only_cuda() {
    let node = RealNode::shared();
    let _turn = node.one_test_at_a_time().await;
    let operator = archive_files(&node.image("operator").archive);
    assert!(
        operator.contains("usr/local/bin/diloco-operator"),
        "the operator binary is there"
    );
    let torch: Vec<_> = operator
        .iter()
        .filter(|f| f.contains("libtorch") || f.contains("libc10") || f.contains("/nvidia/"))
        .collect();
    assert!(
        torch.is_empty(),
        "libtorch in the operator image: {torch:?}"
    );

    // The same scan finds libtorch where it is: it is not blind.
    let coordinator = archive_files(&node.image("coordinator-cpu").archive);
    for library in [
        "libtorch_cpu.so",
        "libc10.so",
        "libgomp.so.1",
        "libcudart.so.13",
    ] {
        assert_eq!(
            named(&coordinator, library).len(),
            1,
            "{library} in the coordinator image"
        );
    }
    for left_out in [
        "libtorch_cuda.so",
        "libc10_cuda.so",
        "libcudnn.so.9",
        "libnccl.so.2",
    ] {
        assert!(
            named(&coordinator, left_out).is_empty(),
            "{left_out} in the CPU variant"
        );
    }
    let worker = archive_files(&node.image("worker-cpu").archive);
    assert!(worker.contains("usr/local/bin/diloco-example-worker"));
    assert_eq!(named(&worker, "libtorch_cpu.so").len(), 1);
}
