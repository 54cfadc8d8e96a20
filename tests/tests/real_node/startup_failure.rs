//! A machine that cannot run the node: `scripts/local-cluster up --node` stops with the failing
//! component's log tail and leaves nothing running, instead of hanging or falling back to a
//! cluster without a node. The component that fails is the kubelet, replaced
//! (`DILOCO_NODE_KUBELET`) by one that exits at once, as a kubelet does on a kernel or cgroup
//! setup it cannot use.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use diloco_tests::local_cluster::repo_root;
use diloco_tests::real_node::RealNode;

/// What the stand-in kubelet says before it exits.
const COMPLAINT: &str = "stand-in kubelet: this machine cannot run a kubelet";

#[tokio::test]
async fn a_node_whose_kubelet_cannot_start_fails_with_its_log_and_leaves_nothing_running() {
    // The shared node's tests pause meanwhile: a second cluster on two cores slows them.
    let _turn = RealNode::shared().one_test_at_a_time().await;
    let scratch = tempfile::tempdir().unwrap();
    let kubelet = scratch.path().join("kubelet");
    std::fs::write(
        &kubelet,
        format!("#!/bin/sh\necho '{COMPLAINT}' >&2\nexit 1\n"),
    )
    .unwrap();
    std::fs::set_permissions(&kubelet, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = scratch.path().join("cluster");

    let started = Instant::now();
    let output = Command::new(repo_root().join("scripts/local-cluster"))
        .args(["up", "--node", "--dir"])
        .arg(&dir)
        .env("DILOCO_NODE_KUBELET", &kubelet)
        .output()
        .unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "up succeeded without a kubelet:\n{stderr}"
    );
    assert!(
        stderr.contains("kubelet exited; last lines of") && stderr.contains(COMPLAINT),
        "the kubelet's log tail is shown:\n{stderr}"
    );
    assert!(stderr.contains("kubelet did not start"), "{stderr}");
    // Not a hang: the control plane and containerd start in seconds, the kubelet is found dead
    // at the first readiness check.
    assert!(took < Duration::from_secs(180), "took {took:?}");

    // `down` ran: no process of that cluster is left (each one names its directory in its
    // command line: configuration files, data and certificate directories).
    let cluster = dir.to_string_lossy().into_owned();
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.ok()?.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains(&cluster).then_some(cmdline)
        })
        .collect();
    assert!(left.is_empty(), "still running: {left:#?}");
}
