//! The chart installed with `helm install` onto the local control plane, and the operator
//! running under exactly the RBAC rules it ships, not as cluster-admin, configured with exactly
//! the arguments and environment of the chart's Deployment: with a token of the chart's
//! ServiceAccount it must reconcile a server completely (children, status, events, rotation,
//! pruning, leader election) without one forbidden request, with the chart's admission policy
//! in force. The default install is namespaced (the release namespace, one Role) in a namespace
//! that enforces PodSecurity `restricted`; a second install watches two namespaces (one Role
//! each) and must leave a third alone. The chart's own operator pods are admitted by
//! PodSecurity (there is no kubelet to run the operator image, so the operator binary runs
//! beside the cluster with that ServiceAccount's credentials).

use std::time::Duration;

use diloco_tests::LocalCluster;
use diloco_tests::chart::install_operator_chart;
use diloco_tests::kube_helpers::{apply_server, condition, install_crd, wait_until};
use diloco_tests::operator_process::OperatorProcess;
use diloco_tests::service_accounts::{client_from, service_account_kubeconfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use diloco_crds::DiLoCoServer;

/// The chart's release name in these tests; its objects are `diloco-diloco-operator`.
const RELEASE: &str = "diloco";
/// The chart's ServiceAccount (and Deployment) for [`RELEASE`].
const FULLNAME: &str = "diloco-diloco-operator";
/// An image the chart's default `allowedImages` admits.
const IMAGE: &str = "ghcr.io/diloco-dev/diloco-coordinator:test";

/// `helm install` of the chart into `namespace` with `sets` (the CRD is installed by the
/// tests already).
fn helm_install(kubeconfig: &std::path::Path, namespace: &str, sets: &[&str]) {
    let notes = install_operator_chart(kubeconfig, RELEASE, namespace, sets);
    assert!(
        notes.contains("kubectl apply"),
        "NOTES.txt tells what to apply next: {notes}"
    );
}

/// Waits until the chart's admission policy is in force for `operator` in `namespace` (the
/// API server loads policies asynchronously): an unlabelled ConfigMap is refused.
async fn wait_for_admission_policy(operator: &kube::Client, namespace: &str) {
    let configmaps = Api::<ConfigMap>::namespaced(operator.clone(), namespace);
    let unlabelled: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "not-a-child"}})).unwrap();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    wait_until(
        Duration::from_secs(30),
        "the chart's admission policy in force",
        || async {
            match configmaps.create(&dry_run, &unlabelled).await {
                Err(kube::Error::Api(status))
                    if status.message.contains("ValidatingAdmissionPolicy") =>
                {
                    Some(())
                }
                _ => None,
            }
        },
    )
    .await;
}

/// Whether the operator's log shows a request the API server refused.
fn forbidden_requests(operator: &OperatorProcess) -> Option<String> {
    let log = operator.log_text();
    // The API server's refusal says "… is forbidden: User …"; a bare "403" would also match a
    // log line's timestamp (…:31.220403Z).
    log.to_lowercase().contains("forbidden").then_some(log)
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
    // The defaults: the release namespace only, admission policy and NetworkPolicy on.
    helm_install(cluster.kubeconfig(), &namespace, &[]);
    // The controller-manager creates the chart's two operator pods: PodSecurity admits them.
    wait_until(
        Duration::from_secs(30),
        "the chart's operator pods",
        || async {
            let pods =
                Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &namespace)
                    .list(&ListParams::default().labels("app.kubernetes.io/name=diloco-operator"))
                    .await
                    .ok()?;
            (pods.items.len() == 2).then_some(())
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = service_account_kubeconfig(&client, &namespace, FULLNAME, dir.path()).await;

    // Sanity: the ServiceAccount cannot do what the chart does not grant.
    let restricted = client_from(&kubeconfig).await;
    let forbidden = Api::<Secret>::namespaced(restricted.clone(), "default")
        .list(&Default::default())
        .await;
    assert!(
        matches!(forbidden, Err(kube::Error::Api(ref s)) if s.code == 403),
        "Secrets outside the watched namespace are off limits: {forbidden:?}"
    );
    // Every child the operator writes below passes the chart's admission policy.
    wait_for_admission_policy(&restricted, &namespace).await;

    let chart_deployment = Api::<Deployment>::namespaced(client.clone(), &namespace)
        .get(FULLNAME)
        .await
        .unwrap();
    let operator = OperatorProcess::start_like(&chart_deployment, &kubeconfig, dir.path());
    apply_server(
        &client,
        &namespace,
        "llm",
        json!({"diloco.dev/rotate-token": "first"}),
        json!({"image": IMAGE, "tls": {"clients": [{"name": "site-a"}]}}),
    )
    .await;
    let server = wait_until(
        Duration::from_secs(20),
        "status written by the operator",
        || async {
            let server = Api::<DiLoCoServer>::namespaced(client.clone(), &namespace)
                .get("llm")
                .await
                .ok()?;
            (condition(&server, "CredentialsReady")?.status == "True").then_some(server)
        },
    )
    .await;
    assert_eq!(condition(&server, "NetworkReady").unwrap().status, "True");
    assert!(
        Api::<Deployment>::namespaced(client.clone(), &namespace)
            .get_opt("llm-coordinator")
            .await
            .unwrap()
            .is_some(),
        "the coordinator Deployment passed the admission policy"
    );
    // Pruning needs list and delete: switch the bulk plane off.
    apply_server(
        &client,
        &namespace,
        "llm",
        json!({"diloco.dev/rotate-token": "second"}),
        json!({"image": IMAGE, "bulk": {"enabled": false},
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
        .get(&format!("{FULLNAME}-leader"))
        .await
        .unwrap();
    assert!(
        lease.spec.unwrap().holder_identity.is_some(),
        "leader election took the chart's Lease"
    );
    if let Some(log) = forbidden_requests(&operator) {
        panic!("a request was forbidden:\n{log}");
    }
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
    if let Some(log) = forbidden_requests(&operator) {
        panic!("a request was forbidden:\n{log}");
    }
}

#[tokio::test]
async fn an_operator_watching_two_namespaces_reconciles_there_and_leaves_a_third_alone() {
    let cluster = LocalCluster::shared();
    let client = cluster.client().await.unwrap();
    install_crd(&client).await;
    let operator_namespace = cluster.namespace(&client, "op-multi").await.unwrap();
    let team_a = cluster.namespace(&client, "team-a").await.unwrap();
    let team_b = cluster.namespace(&client, "team-b").await.unwrap();
    let team_c = cluster.namespace(&client, "team-c").await.unwrap();
    helm_install(
        cluster.kubeconfig(),
        &operator_namespace,
        &[&format!("watchNamespaces={{{team_a},{team_b}}}")],
    );
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig =
        service_account_kubeconfig(&client, &operator_namespace, FULLNAME, dir.path()).await;
    let restricted = client_from(&kubeconfig).await;

    // Namespaced rights only: no cluster-wide list, nothing in the unwatched namespace (nor in
    // the operator's own, which it does not watch here).
    for (servers, what) in [
        (
            Api::<DiLoCoServer>::all(restricted.clone()),
            "every namespace",
        ),
        (
            Api::namespaced(restricted.clone(), &team_c),
            "the unwatched namespace",
        ),
        (
            Api::namespaced(restricted.clone(), &operator_namespace),
            "the operator's namespace",
        ),
    ] {
        let listed = servers.list(&ListParams::default()).await;
        assert!(
            matches!(listed, Err(kube::Error::Api(ref s)) if s.code == 403),
            "listing DiLoCoServers in {what} is forbidden: {listed:?}"
        );
    }
    for namespace in [&team_a, &team_b] {
        wait_for_admission_policy(&restricted, namespace).await;
    }

    let chart_deployment = Api::<Deployment>::namespaced(client.clone(), &operator_namespace)
        .get(FULLNAME)
        .await
        .unwrap();
    let operator = OperatorProcess::start_like(&chart_deployment, &kubeconfig, dir.path());
    for namespace in [&team_a, &team_b, &team_c] {
        apply_server(
            &client,
            namespace,
            "llm",
            json!({}),
            json!({"image": IMAGE}),
        )
        .await;
    }
    for namespace in [&team_a, &team_b] {
        wait_until(
            Duration::from_secs(30),
            "a server of a watched namespace reconciled",
            || async {
                let server = Api::<DiLoCoServer>::namespaced(client.clone(), namespace)
                    .get("llm")
                    .await
                    .ok()?;
                (condition(&server, "CredentialsReady")?.status == "True").then_some(())?;
                Api::<Deployment>::namespaced(client.clone(), namespace)
                    .get_opt("llm-coordinator")
                    .await
                    .ok()?
                    .map(|_| ())
            },
        )
        .await;
    }
    // Both watched servers are done; one in a watched namespace would have been by now too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let untouched = Api::<DiLoCoServer>::namespaced(client.clone(), &team_c)
        .get("llm")
        .await
        .unwrap();
    assert!(
        untouched.status.is_none(),
        "the unwatched server got a status: {:?}",
        untouched.status
    );
    let children = ListParams::default().labels("app.kubernetes.io/managed-by=diloco-operator");
    let secrets = Api::<Secret>::namespaced(client.clone(), &team_c)
        .list(&children)
        .await
        .unwrap();
    let deployments = Api::<Deployment>::namespaced(client.clone(), &team_c)
        .list(&children)
        .await
        .unwrap();
    assert!(
        secrets.items.is_empty() && deployments.items.is_empty(),
        "the unwatched namespace got children"
    );
    if let Some(log) = forbidden_requests(&operator) {
        panic!("a request was forbidden:\n{log}");
    }
    assert!(
        operator.log_text().contains(&format!("{team_a},{team_b}")),
        "the operator reports the namespaces it watches:\n{}",
        operator.log_text()
    );
}
