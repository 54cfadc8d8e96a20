//! The chart installed with `helm install` onto the local control plane (namespace-scoped
//! mode, in a namespace that enforces PodSecurity `restricted`), and the operator running under
//! exactly the RBAC rules it ships, not as cluster-admin: with a token of the chart's
//! ServiceAccount it must reconcile a server completely (children, status, events, rotation,
//! pruning, leader election) without one forbidden request. The chart's own operator pods are
//! admitted by PodSecurity (there is no kubelet to run the operator image, so the operator
//! binary runs beside the cluster with that ServiceAccount's credentials).

use std::process::Command;
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

/// `helm install` of the chart for a namespace-scoped install in `namespace` (the CRD is
/// installed by the tests already).
fn helm_install(kubeconfig: &std::path::Path, namespace: &str) {
    let output = Command::new(kube_tools().join("helm"))
        .args([
            "install",
            "diloco",
            "charts/diloco-operator",
            "--namespace",
            namespace,
        ])
        .args(["--set", &format!("watchNamespace={namespace}")])
        .args(["--set", "crds.install=false"])
        .env("KUBECONFIG", kubeconfig)
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "helm install failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let notes = String::from_utf8_lossy(&output.stdout);
    assert!(
        notes.contains("kubectl apply"),
        "NOTES.txt tells what to apply next: {notes}"
    );
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
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .patch(
            &namespace,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {
                "pod-security.kubernetes.io/enforce": "restricted"
            }}})),
        )
        .await
        .unwrap();
    helm_install(cluster.kubeconfig(), &namespace);
    // The controller-manager creates the chart's two operator pods: PodSecurity admits them.
    wait_until(
        Duration::from_secs(30),
        "the chart's operator pods",
        || async {
            let pods =
                Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &namespace)
                    .list(
                        &kube::api::ListParams::default()
                            .labels("app.kubernetes.io/name=diloco-operator"),
                    )
                    .await
                    .ok()?;
            (pods.items.len() == 2).then_some(())
        },
    )
    .await;
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
