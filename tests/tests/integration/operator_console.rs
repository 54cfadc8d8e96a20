//! The console's access, on a real API server with the chart's RBAC: the chart installed with
//! `console.enabled=true` and the operator running as its own ServiceAccount with exactly the
//! chart Deployment's arguments. For a server it creates the console's client certificate
//! Secret, a Role allowing `get` on exactly that Secret and a RoleBinding to the console's
//! ServiceAccount (the API server's escalation check passes: the operator holds `get` on
//! Secrets), lists the console as an admin client and admits its pods on the control port.
//! The console's ServiceAccount can then read that Secret and no other (SubjectAccessReviews
//! and real requests with its token). An operator started without the console setting removes
//! all of it.

use std::time::Duration;

use diloco_tests::LocalCluster;
use diloco_tests::chart::install_operator_chart;
use diloco_tests::kube_helpers::{apply_server, condition, install_crd, wait_until};
use diloco_tests::operator_process::OperatorProcess;
use diloco_tests::service_accounts::{client_from, service_account_kubeconfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, Resource};
use serde_json::json;

use diloco_crds::DiLoCoServer;

const RELEASE: &str = "diloco";
/// The operator's ServiceAccount and Deployment for [`RELEASE`].
const OPERATOR: &str = "diloco-diloco-operator";
/// The console's ServiceAccount for [`RELEASE`].
const CONSOLE: &str = "diloco-diloco-operator-console";
const IMAGE: &str = "ghcr.io/diloco-dev/diloco-coordinator:test";
const CONSOLE_SECRET: &str = "llm-console-client-tls";

/// Whether `user` may `verb` the Secret `name` (or all Secrets when `None`) in `namespace`,
/// as the API server's authorizer answers.
async fn may(admin: &Client, user: &str, namespace: &str, verb: &str, name: Option<&str>) -> bool {
    let service_account_namespace = user.split(':').nth(2).unwrap_or_default();
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_string()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{service_account_namespace}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_string()),
                verb: Some(verb.to_string()),
                resource: Some("secrets".into()),
                name: name.map(str::to_string),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    Api::<SubjectAccessReview>::all(admin.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap()
        .allowed
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(ref s)) if s.code == 403)
}

async fn exists<K>(client: &Client, namespace: &str, name: &str) -> bool
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .unwrap()
        .is_some()
}

async fn control_peers(client: &Client, namespace: &str) -> serde_json::Value {
    let policy = Api::<NetworkPolicy>::namespaced(client.clone(), namespace)
        .get("llm-control")
        .await
        .unwrap();
    serde_json::to_value(policy).unwrap()["spec"]["ingress"][0]["from"].clone()
}

async fn clients_file(client: &Client, namespace: &str) -> String {
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get("llm-clients")
        .await
        .unwrap()
        .data
        .unwrap()["clients.json"]
        .clone()
}

#[tokio::test]
async fn the_console_may_read_its_certificate_only_and_loses_it_when_switched_off() {
    let cluster = LocalCluster::shared();
    let admin = cluster.client().await.unwrap();
    install_crd(&admin).await;
    let namespace = cluster.namespace(&admin, "op-console").await.unwrap();
    install_operator_chart(
        cluster.kubeconfig(),
        RELEASE,
        &namespace,
        &["console.enabled=true"],
    );
    let dir = tempfile::tempdir().unwrap();
    let operator_kubeconfig =
        service_account_kubeconfig(&admin, &namespace, OPERATOR, dir.path()).await;
    let chart_deployment = Api::<Deployment>::namespaced(admin.clone(), &namespace)
        .get(OPERATOR)
        .await
        .unwrap();
    let operator = OperatorProcess::start_like(&chart_deployment, &operator_kubeconfig, dir.path());
    apply_server(
        &admin,
        &namespace,
        "llm",
        json!({}),
        json!({"image": IMAGE}),
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "the console's Secret, Role and RoleBinding",
        || async {
            let server = Api::<DiLoCoServer>::namespaced(admin.clone(), &namespace)
                .get("llm")
                .await
                .ok()?;
            (condition(&server, "CredentialsReady")?.status == "True").then_some(())?;
            (exists::<Secret>(&admin, &namespace, CONSOLE_SECRET).await
                && exists::<Role>(&admin, &namespace, "llm-console").await
                && exists::<RoleBinding>(&admin, &namespace, "llm-console").await)
                .then_some(())
        },
    )
    .await;
    let log = operator.log_text();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the chart's RBAC lets the operator grant the console's Role:\n{log}"
    );

    // The objects: a certificate, `get` on it alone, bound to the console's ServiceAccount.
    let secret = Api::<Secret>::namespaced(admin.clone(), &namespace)
        .get(CONSOLE_SECRET)
        .await
        .unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let keys: Vec<&String> = secret.data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
    let role = Api::<Role>::namespaced(admin.clone(), &namespace)
        .get("llm-console")
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&role.rules).unwrap(),
        json!([{"apiGroups": [""], "resources": ["secrets"],
                "resourceNames": [CONSOLE_SECRET], "verbs": ["get"]}])
    );
    let binding = Api::<RoleBinding>::namespaced(admin.clone(), &namespace)
        .get("llm-console")
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&binding.subjects).unwrap(),
        json!([{"kind": "ServiceAccount", "name": CONSOLE, "namespace": namespace}])
    );
    assert_eq!(binding.role_ref.name, "llm-console");
    let clients: serde_json::Value =
        serde_json::from_str(&clients_file(&admin, &namespace).await).unwrap();
    assert!(
        clients["clients"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "diloco-console", "role": "admin"})),
        "{clients}"
    );
    let peers = control_peers(&admin, &namespace).await;
    assert!(
        peers.as_array().unwrap().contains(&json!({
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "podSelector": {"matchLabels": {
                "app.kubernetes.io/instance": RELEASE,
                "app.kubernetes.io/name": "diloco-console"}},
        })),
        "the console's pods reach the control port: {peers}"
    );

    // What the console's ServiceAccount may do, as the authorizer says…
    let user = format!("system:serviceaccount:{namespace}:{CONSOLE}");
    assert!(may(&admin, &user, &namespace, "get", Some(CONSOLE_SECRET)).await);
    for other in [
        "llm-token",
        "llm-admin-token",
        "llm-ca",
        "llm-worker-credentials",
    ] {
        assert!(
            !may(&admin, &user, &namespace, "get", Some(other)).await,
            "the console may get {other}"
        );
    }
    assert!(!may(&admin, &user, &namespace, "list", None).await);
    assert!(!may(&admin, &user, &namespace, "watch", None).await);
    assert!(!may(&admin, &user, "default", "get", Some(CONSOLE_SECRET)).await);
    // …and as it finds with its own token.
    let console_kubeconfig =
        service_account_kubeconfig(&admin, &namespace, CONSOLE, dir.path()).await;
    let console = client_from(&console_kubeconfig).await;
    let secrets = Api::<Secret>::namespaced(console.clone(), &namespace);
    let read = secrets.get(CONSOLE_SECRET).await.unwrap();
    assert_eq!(read.data, secret.data);
    assert!(forbidden(secrets.get("llm-token").await));
    assert!(forbidden(secrets.list(&ListParams::default()).await));
    let servers = Api::<DiLoCoServer>::namespaced(console.clone(), &namespace);
    assert!(
        servers.list(&ListParams::default()).await.is_ok(),
        "the console lists servers"
    );

    // Without the console setting, the operator removes all of it.
    operator.stop();
    let mut without = chart_deployment.clone();
    let container = &mut without.spec.template.spec.as_mut().unwrap().containers[0];
    let args = container.args.as_mut().unwrap();
    let before = args.len();
    args.retain(|a| !a.starts_with("--console-"));
    assert_eq!(
        before - args.len(),
        2,
        "the chart passes both console flags"
    );
    let operator = OperatorProcess::start_like(&without, &operator_kubeconfig, dir.path());
    wait_until(
        Duration::from_secs(30),
        "the console's Secret, Role and RoleBinding pruned",
        || async {
            (!exists::<Secret>(&admin, &namespace, CONSOLE_SECRET).await
                && !exists::<Role>(&admin, &namespace, "llm-console").await
                && !exists::<RoleBinding>(&admin, &namespace, "llm-console").await
                && !clients_file(&admin, &namespace)
                    .await
                    .contains("diloco-console"))
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        control_peers(&admin, &namespace)
            .await
            .as_array()
            .unwrap()
            .len(),
        2,
        "workers and the operator only"
    );
    assert!(!may(&admin, &user, &namespace, "get", Some(CONSOLE_SECRET)).await);
    // A server created without the console setting never gets any of it.
    apply_server(
        &admin,
        &namespace,
        "other",
        json!({}),
        json!({"image": IMAGE}),
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "server other reconciled",
        || async {
            let server = Api::<DiLoCoServer>::namespaced(admin.clone(), &namespace)
                .get("other")
                .await
                .ok()?;
            (condition(&server, "CredentialsReady")?.status == "True").then_some(())
        },
    )
    .await;
    let roles = Api::<Role>::namespaced(admin.clone(), &namespace)
        .list(&ListParams::default().labels("diloco.dev/server"))
        .await
        .unwrap();
    assert!(roles.items.is_empty(), "{:?}", roles.items);
    assert!(!exists::<Secret>(&admin, &namespace, "other-console-client-tls").await);
    let log = operator.log_text();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "pruning the console's Role needs no more than the chart grants:\n{log}"
    );
}
