//! The operator under the RBAC rules the Helm chart ships, not as cluster-admin: the chart's
//! Role (namespace-scoped install) is rendered with `helm template`, applied, bound to the
//! chart's ServiceAccount, and the operator runs with a token of that ServiceAccount. It must
//! reconcile a server completely (children, status, events, rotation, pruning, leader
//! election) without one forbidden request.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use diloco_tests::LocalCluster;
use diloco_tests::kube_helpers::{apply_server, condition, install_crd, wait_until};
use diloco_tests::local_cluster::repo_root;
use diloco_tests::operator_process::OperatorProcess;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, Service, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::json;

/// The directory holding the cached kubectl and helm (`scripts/common.sh` knows where).
fn kube_tools() -> std::path::PathBuf {
    let output = Command::new("bash")
        .arg("-c")
        .arg("source scripts/common.sh && echo \"$KUBE_TOOLS_DIR/bin\"")
        .current_dir(repo_root())
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().into()
}

/// `helm template` of the chart for a namespace-scoped install in `namespace`.
fn render_chart(namespace: &str) -> String {
    let output = Command::new(kube_tools().join("helm"))
        .args([
            "template",
            "diloco",
            "charts/diloco-operator",
            "--namespace",
            namespace,
        ])
        .args(["--set", &format!("watchNamespace={namespace}")])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn kubectl_apply(kubeconfig: &std::path::Path, manifests: &str) {
    let mut child = Command::new(kube_tools().join("kubectl"))
        .args(["apply", "-f", "-"])
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifests.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "kubectl apply failed");
}

/// A kubeconfig that authenticates as `namespace/service_account` with a fresh token.
async fn service_account_kubeconfig(
    client: &kube::Client,
    namespace: &str,
    service_account: &str,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let token = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(service_account, &PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token;
    let admin: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(LocalCluster::shared().kubeconfig()).unwrap(),
    )
    .unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "operator", "namespace": namespace}}],
        "current-context": "local",
    });
    let path = dir.join("operator.kubeconfig");
    std::fs::write(&path, serde_norway::to_string(&kubeconfig).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn the_operator_needs_no_more_than_the_charts_rbac_rules() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crd(&client).await;
    let namespace = cluster.namespace(&client, "op-rbac").await.unwrap();
    kubectl_apply(cluster.kubeconfig(), &render_chart(&namespace));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig =
        service_account_kubeconfig(&client, &namespace, "diloco-diloco-operator", dir.path()).await;

    // Sanity: the ServiceAccount cannot do what the chart does not grant.
    let restricted = {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        kube::Client::try_from(config).unwrap()
    };
    let forbidden = Api::<Secret>::namespaced(restricted, "default")
        .list(&Default::default())
        .await;
    assert!(
        matches!(forbidden, Err(kube::Error::Api(ref s)) if s.code == 403),
        "Secrets outside the watched namespace are off limits: {forbidden:?}"
    );

    let operator = OperatorProcess::start(&kubeconfig, &namespace, dir.path(), &[]);
    apply_server(
        &client,
        &namespace,
        "llm",
        json!({"diloco.dev/rotate-token": "first"}),
        json!({"image": "diloco-coordinator:test", "tls": {"clients": [{"name": "site-a"}]}}),
    )
    .await;
    let server = wait_until(
        Duration::from_secs(20),
        "status written by the operator",
        || async {
            let server = Api::<diloco_crds::DiLoCoServer>::namespaced(client.clone(), &namespace)
                .get("llm")
                .await
                .ok()?;
            (condition(&server, "CredentialsReady")?.status == "True").then_some(server)
        },
    )
    .await;
    assert_eq!(condition(&server, "NetworkReady").unwrap().status, "True");
    // Pruning needs list and delete: switch the bulk plane off.
    apply_server(
        &client,
        &namespace,
        "llm",
        json!({"diloco.dev/rotate-token": "second"}),
        json!({"image": "diloco-coordinator:test", "bulk": {"enabled": false},
               "tls": {"clients": [{"name": "site-a"}]}}),
    )
    .await;
    wait_until(
        Duration::from_secs(20),
        "the bulk Service pruned",
        || async {
            Api::<Service>::namespaced(client.clone(), &namespace)
                .get_opt("llm-bulk")
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    let lease = Api::<Lease>::namespaced(client.clone(), &namespace)
        .get("diloco-operator-leader")
        .await
        .unwrap();
    assert!(
        lease.spec.unwrap().holder_identity.is_some(),
        "leader election took the Lease"
    );
    let log = operator.log_text();
    assert!(
        !log.contains("403") && !log.to_lowercase().contains("forbidden"),
        "a request was forbidden:\n{log}"
    );
    // Events are published right after the children are applied.
    wait_until(Duration::from_secs(10), "a TokenRotated event", || async {
        let events =
            Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), &namespace)
                .list(&Default::default())
                .await
                .ok()?;
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("TokenRotated"))
            .then_some(())
    })
    .await;
    let log = operator.log_text();
    assert!(
        !log.contains("403") && !log.to_lowercase().contains("forbidden"),
        "a request was forbidden:\n{log}"
    );
}
