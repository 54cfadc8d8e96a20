//! The Helm chart without a cluster: `helm lint --strict` is clean, the rendered CRD is the
//! one the types generate (kept on uninstall), both RBAC modes render, the operator Deployment
//! runs two replicas with a restricted security context, and values.schema.json refuses typos
//! and impossible values with a message. (Installing it onto the local control plane is
//! `operator_rbac.rs`.)

use std::process::Command;

use diloco_tests::local_cluster::repo_root;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

fn helm(args: &[&str]) -> std::process::Output {
    let tools = Command::new("bash")
        .arg("-c")
        .arg("source scripts/common.sh && echo \"$KUBE_TOOLS_DIR/bin\"")
        .current_dir(repo_root())
        .output()
        .unwrap();
    let bin = String::from_utf8(tools.stdout).unwrap();
    Command::new(std::path::Path::new(bin.trim()).join("helm"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap()
}

/// Every object `helm template` renders with `sets`.
fn render(sets: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "diloco",
        "charts/diloco-operator",
        "--namespace",
        "ops",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let output = helm(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    text.split("\n---")
        .filter_map(|doc| serde_norway::from_str::<Value>(doc).ok())
        .filter(|v| v.is_object())
        .collect()
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut kinds: Vec<String> = objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    kinds.sort();
    kinds
}

#[test]
fn the_chart_lints_clean() {
    let output = helm(&["lint", "--strict", "charts/diloco-operator"]);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_default_install_is_cluster_wide_with_the_crd_kept_on_uninstall() {
    let objects = render(&[]);
    assert_eq!(
        kinds(&objects),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
    );
    let crd = objects
        .iter()
        .find(|o| o["kind"] == "CustomResourceDefinition")
        .unwrap();
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let rendered: CustomResourceDefinition = serde_json::from_value(crd.clone()).unwrap();
    assert_eq!(
        rendered.spec,
        diloco_crds::crd().spec,
        "the chart's CRD is the generated one"
    );

    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    assert_eq!(
        deployment["spec"]["replicas"], 2,
        "two replicas, one leader"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        env,
        ["POD_NAMESPACE", "POD_NAME"],
        "no watch namespace: all namespaces"
    );
}

#[test]
fn a_namespace_scoped_install_gets_roles_and_no_cluster_rights() {
    let objects = render(&[
        "watchNamespace=team-a",
        "crds.install=false",
        "metrics.serviceMonitor.enabled=true",
    ]);
    assert_eq!(
        kinds(&objects),
        [
            "Deployment",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ]
    );
    let role = objects
        .iter()
        .find(|o| o["kind"] == "Role" && o["metadata"]["namespace"] == "team-a")
        .expect("the reconcile Role lives in the watched namespace");
    let rules = serde_json::to_string(&role["rules"]).unwrap();
    assert!(!rules.contains("\"*\""), "no wildcard rights: {rules}");
    let deployment = objects.iter().find(|o| o["kind"] == "Deployment").unwrap();
    let env =
        serde_json::to_string(&deployment["spec"]["template"]["spec"]["containers"][0]["env"])
            .unwrap();
    assert!(
        env.contains("DILOCO_WATCH_NAMESPACE") && env.contains("team-a"),
        "{env}"
    );
}

#[test]
fn the_values_schema_refuses_typos_and_impossible_values() {
    for (set, expected) in [
        ("replicaCount=0", "replicaCount"),
        ("watchNamespace=Not_A_Namespace", "watchNamespace"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("replicas=2", "additional properties 'replicas' not allowed"),
    ] {
        let output = helm(&["template", "diloco", "charts/diloco-operator", "--set", set]);
        assert!(!output.status.success(), "{set} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{set}: {stderr}");
    }
}

#[test]
fn the_kubectl_bundle_is_the_chart_rendered_with_its_defaults() {
    let output = helm(&[
        "template",
        "diloco-operator",
        "charts/diloco-operator",
        "--namespace",
        "diloco-system",
    ]);
    assert!(output.status.success());
    let rendered = String::from_utf8(output.stdout).unwrap();
    let bundle = std::fs::read_to_string(repo_root().join("deploy/install.yaml")).unwrap();
    assert!(
        bundle.ends_with(&rendered) && bundle.contains("kind: Namespace"),
        "deploy/install.yaml is stale: run `make bundle`"
    );
}
