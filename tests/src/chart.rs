//! Installing the operator's Helm chart into a test cluster.

use std::path::Path;

use crate::service_accounts::kube_tool;

/// `helm install` of `charts/diloco-operator` as `release` into `namespace` of the cluster
/// `kubeconfig` points at, with `--set` values `sets` and without the CRD (the tests install
/// it once for every namespace). Panics with helm's error output when the install fails;
/// returns helm's standard output (the chart's NOTES).
pub fn install_operator_chart(
    kubeconfig: &Path,
    release: &str,
    namespace: &str,
    sets: &[&str],
) -> String {
    let mut command = kube_tool("helm");
    command
        .args(["install", release, "charts/diloco-operator"])
        .args(["--namespace", namespace])
        .args(["--set", "crds.install=false"]);
    for set in sets {
        command.args(["--set", set]);
    }
    let output = command
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("helm runs");
    assert!(
        output.status.success(),
        "helm install failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every object `helm template` renders of `charts/diloco-operator` as release `diloco` into
/// `namespace` with `--set` values `sets`, as JSON. Panics with helm's error when it fails.
pub fn render_chart(namespace: &str, sets: &[&str]) -> Vec<serde_json::Value> {
    let mut command = kube_tool("helm");
    command.args([
        "template",
        "diloco",
        "charts/diloco-operator",
        "--namespace",
        namespace,
    ]);
    for set in sets {
        command.args(["--set", set]);
    }
    let output = command.output().expect("helm runs");
    assert!(
        output.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .split("\n---")
        .filter_map(|doc| serde_norway::from_str::<serde_json::Value>(doc).ok())
        .filter(serde_json::Value::is_object)
        .collect()
}
