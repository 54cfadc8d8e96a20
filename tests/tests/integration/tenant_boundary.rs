//! The tenant boundary on the real API server: a user whose RBAC grants only `dilocoservers`
//! in their namespace (impersonated, as a research team on a shared cluster would be) tries
//! every way a spec could reach what their RBAC does not — another server's worker
//! credentials and CA key, a claim and a privileged ServiceAccount that are not theirs, an
//! image outside the allowlist, a child-name collision with another server's CA, and an empty
//! peer list that would open the coordinator to everyone. Each is refused with a condition
//! (or by the API server) naming the reason; no pod template ever mounts the target; the
//! targets are never written; and the user can read the other server's Secrets by no path.
//! The same references with their owner's consent label work.

use std::collections::BTreeMap;
use std::time::Duration;

use diloco_crds::DiLoCoServer;
use diloco_tests::LocalCluster;
use diloco_tests::kube_helpers::{condition, install_crd, wait_until};
use diloco_tests::operator_process::OperatorProcess;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Event as CoreEvent, PersistentVolumeClaim, Secret, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::json;

/// Images this operator allows.
const ALLOWED_IMAGE: &str = "registry.example/diloco";
const IMAGE: &str = "registry.example/diloco:1.0";
/// The platform team's server; its children are what the tenant is after. Named so that a
/// server `lab` with a client `ca` would want its CA Secret's name.
const VICTIM: &str = "lab-client";
const TENANT: &str = "alice";

/// A client acting as `user` (through impersonation by the cluster admin).
async fn client_as(user: &str) -> Client {
    let kubeconfig = Kubeconfig::read_from(LocalCluster::shared().kubeconfig()).unwrap();
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = Some(vec!["system:authenticated".to_string()]);
    Client::try_from(config).unwrap()
}

/// The tenant's rights: DiLoCoServers (and reading pods and their logs, as teams usually
/// can), nothing about Secrets, claims or ServiceAccounts.
async fn grant_tenant(admin: &Client, namespace: &str) {
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "diloco-user"},
        "rules": [
            {"apiGroups": ["diloco.dev"], "resources": ["dilocoservers"],
             "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
            {"apiGroups": ["diloco.dev"], "resources": ["dilocoservers/status"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["pods", "pods/log", "events"], "verbs": ["get", "list"]},
        ],
    }))
    .unwrap();
    Api::<Role>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "diloco-user"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "diloco-user"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": TENANT}],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

async fn create<K>(client: &Client, namespace: &str, object: serde_json::Value)
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).unwrap();
    Api::<K>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

/// Applies a server as `client`; the API server's answer.
async fn apply_as(
    client: &Client,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) -> Result<DiLoCoServer, kube::Error> {
    let object = json!({
        "apiVersion": "diloco.dev/v1alpha1", "kind": "DiLoCoServer",
        "metadata": {"name": name}, "spec": spec,
    });
    Api::<DiLoCoServer>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply("tenant").force(),
            &Patch::Apply(&object),
        )
        .await
}

/// Waits until server `name` reports `Ready=False` with a reason other than pending work,
/// and returns that condition's reason and message.
async fn refusal(client: &Client, namespace: &str, name: &str) -> (String, String) {
    let api = Api::<DiLoCoServer>::namespaced(client.clone(), namespace);
    // A referenced Secret is not watched: an edit to it is seen at the next resync (15 s
    // while a server is not ready).
    wait_until(
        Duration::from_secs(45),
        &format!("{name} refused"),
        || async {
            let server = api.get(name).await.ok()?;
            let ready = condition(&server, "Ready")?;
            (ready.status == "False"
                && server.status.as_ref()?.phase == Some(diloco_crds::Phase::Failed))
            .then(|| (ready.reason.clone(), ready.message.clone()))
        },
    )
    .await
}

fn secret_text(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

/// Every Secret name a Deployment's pod template mounts.
fn mounted_secrets(deployment: &Deployment) -> Vec<String> {
    let pod = deployment.spec.template.spec.as_ref();
    pod.into_iter()
        .flat_map(|pod| pod.volumes.iter().flatten())
        .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
        .collect()
}

#[tokio::test]
async fn a_spec_reaches_nothing_its_author_could_not() {
    let cluster = LocalCluster::shared();
    let admin = cluster.client().await.unwrap();
    install_crd(&admin).await;
    let namespace = cluster.namespace(&admin, "team-a").await.unwrap();
    let logs = tempfile::tempdir().unwrap();
    let _operator = OperatorProcess::start(
        cluster.kubeconfig(),
        &namespace,
        logs.path(),
        &["--allowed-image-prefix", ALLOWED_IMAGE],
    );
    grant_tenant(&admin, &namespace).await;
    let tenant = client_as(TENANT).await;
    let secrets = Api::<Secret>::namespaced(admin.clone(), &namespace);

    // The platform team's server, and objects of the namespace that are not the tenant's.
    apply_as(&admin, &namespace, VICTIM, json!({"image": IMAGE}))
        .await
        .unwrap();
    let victim_names = [
        format!("{VICTIM}-token"),
        format!("{VICTIM}-admin-token"),
        format!("{VICTIM}-ca"),
        format!("{VICTIM}-worker-credentials"),
    ];
    let victim_secrets: Vec<Secret> =
        wait_until(Duration::from_secs(30), "the victim's Secrets", || async {
            let mut found = Vec::new();
            for name in &victim_names {
                found.push(secrets.get_opt(name).await.ok()??);
            }
            Some(found)
        })
        .await;
    let victim_token = secret_text(&victim_secrets[0])["token"].clone();
    let victim_admin_token = secret_text(&victim_secrets[1])["token"].clone();
    let victim_ca_key = secret_text(&victim_secrets[2])["tls.key"].clone();
    create::<PersistentVolumeClaim>(
        &admin,
        &namespace,
        json!({"metadata": {"name": "archive"},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    create::<ServiceAccount>(
        &admin,
        &namespace,
        json!({"metadata": {"name": "ci-deployer"}}),
    )
    .await;

    // The tenant cannot read Secrets directly.
    let as_tenant = Api::<Secret>::namespaced(tenant.clone(), &namespace);
    match as_tenant.get(&victim_names[3]).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("the tenant read a Secret: {other:?}"),
    }

    // Every reference path, each a server of the tenant's own.
    let attempts = [
        (
            "steal-token",
            json!({"image": IMAGE, "auth": {"tokenSecretRef": {"name": victim_names[3]}}}),
            "ReferenceNotAllowed",
            "auth.tokenSecretRef",
        ),
        (
            "steal-admin",
            json!({"image": IMAGE, "auth": {"tokenSecretRef": {"name": victim_names[1]}}}),
            "ReferenceNotAllowed",
            "auth.tokenSecretRef",
        ),
        (
            "steal-ca",
            json!({"image": IMAGE, "tls": {"mode": "secret", "secretName": victim_names[2], "clientAuth": "none"}}),
            "ReferenceNotAllowed",
            "tls.secretName",
        ),
        (
            "foreign-claim",
            json!({"image": IMAGE, "audit": {"existingClaim": "archive"}}),
            "ReferenceNotAllowed",
            "audit.existingClaim",
        ),
        (
            "victim-claim",
            json!({"image": IMAGE, "audit": {"existingClaim": format!("{VICTIM}-state")}}),
            "ReferenceNotAllowed",
            "audit.existingClaim",
        ),
        (
            "privileged-sa",
            json!({"image": IMAGE, "serviceAccountName": "ci-deployer"}),
            "ReferenceNotAllowed",
            "serviceAccountName",
        ),
        (
            "foreign-image",
            json!({"image": "evil.example/miner:1"}),
            "ImageNotAllowed",
            "evil.example/miner:1",
        ),
        (
            "lookalike-image",
            json!({"image": "registry.example/diloco-evil:1"}),
            "ImageNotAllowed",
            "registry.example/diloco-evil:1",
        ),
        // `lab` with client `ca` wants `lab-client-ca`: the victim's CA Secret.
        (
            "lab",
            json!({"image": IMAGE, "tls": {"clients": [{"name": "ca"}]}}),
            "NameConflict",
            "Secret/lab-client-ca (controlled by DiLoCoServer lab-client)",
        ),
    ];
    for (name, spec, _, _) in &attempts {
        apply_as(&tenant, &namespace, name, spec.clone())
            .await
            .unwrap_or_else(|e| panic!("the tenant may create DiLoCoServer {name}: {e}"));
    }
    for (name, _, reason, names) in &attempts {
        let (got_reason, message) = refusal(&tenant, &namespace, name).await;
        assert_eq!(&got_reason, reason, "{name}: {message}");
        assert!(message.contains(names), "{name}: {message}");
    }

    // An empty peer list never reaches the operator: the API server refuses it.
    let open = apply_as(
        &tenant,
        &namespace,
        "open-to-all",
        json!({"image": IMAGE, "networkPolicy": {"controlFrom": []}}),
    )
    .await;
    match open {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(
                status.message.contains("would admit every source"),
                "{status:?}"
            );
        }
        other => panic!("an empty controlFrom was accepted: {other:?}"),
    }

    // Nothing was built for a refused server, and no pod template anywhere mounts the
    // victim's Secrets but the victim's own.
    let deployments = Api::<Deployment>::namespaced(admin.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .unwrap();
    for deployment in &deployments.items {
        let owner = deployment.labels().get("diloco.dev/server").cloned();
        assert_eq!(
            owner.as_deref(),
            Some(VICTIM),
            "only the victim has a Deployment: {}",
            deployment.name_any()
        );
    }
    for (name, ..) in &attempts {
        let children = Api::<Secret>::namespaced(admin.clone(), &namespace)
            .list(&ListParams::default().labels(&format!("diloco.dev/server={name}")))
            .await
            .unwrap();
        assert!(children.items.is_empty(), "{name} got Secrets");
    }
    let victim_deployment = &deployments.items[0];
    assert!(mounted_secrets(victim_deployment).contains(&victim_names[0]));

    // The victim's Secrets were never written, and no Secret but the victim's own (and its
    // bundle) carries its token or CA key.
    for before in &victim_secrets {
        let after = secrets.get(&before.name_any()).await.unwrap();
        assert_eq!(
            after.metadata.resource_version,
            before.metadata.resource_version,
            "{} was written",
            before.name_any()
        );
    }
    for secret in secrets.list(&ListParams::default()).await.unwrap() {
        let text = serde_json::to_string(&secret_text(&secret)).unwrap();
        let holds = text.contains(&victim_token)
            || text.contains(&victim_ca_key)
            || text.contains(&victim_admin_token);
        if holds {
            assert_eq!(
                secret.labels().get("diloco.dev/server").map(String::as_str),
                Some(VICTIM),
                "{} holds the victim's credentials",
                secret.name_any()
            );
        }
    }

    // What the tenant can read — their servers' status and the namespace's events — holds
    // none of it either.
    let readable = serde_json::to_string(&(
        Api::<DiLoCoServer>::namespaced(tenant.clone(), &namespace)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
        Api::<CoreEvent>::namespaced(tenant.clone(), &namespace)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items,
    ))
    .unwrap();
    for secret in [&victim_token, &victim_admin_token, &victim_ca_key] {
        assert!(
            !readable.contains(secret.trim()),
            "a credential reached status or events"
        );
    }

    // With the owner's consent label (and a token worth the name) the same references work.
    let token = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    create::<Secret>(
        &admin,
        &namespace,
        json!({"metadata": {"name": "team-token", "labels": {"diloco.dev/referable": "true"}},
               "stringData": {"token": token}}),
    )
    .await;
    Api::<ServiceAccount>::namespaced(admin.clone(), &namespace)
        .patch(
            "ci-deployer",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"diloco.dev/referable": "true"}}})),
        )
        .await
        .unwrap();
    apply_as(
        &tenant,
        &namespace,
        "consented",
        json!({"image": IMAGE, "auth": {"tokenSecretRef": {"name": "team-token"}},
               "serviceAccountName": "ci-deployer"}),
    )
    .await
    .unwrap();
    let deployment = wait_until(
        Duration::from_secs(30),
        "the consented server's Deployment",
        || async {
            Api::<Deployment>::namespaced(admin.clone(), &namespace)
                .get_opt("consented-coordinator")
                .await
                .ok()?
        },
    )
    .await;
    assert!(mounted_secrets(&deployment).contains(&"team-token".to_string()));
    let pod = deployment.spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("ci-deployer"));
    assert_eq!(pod.automount_service_account_token, Some(false));

    // A weak token is refused even with consent.
    secrets
        .patch(
            "team-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"token": "password-password-password-12345"}})),
        )
        .await
        .unwrap();
    let (reason, message) = refusal(&tenant, &namespace, "consented").await;
    assert_eq!(reason, "TokenSecretInvalid", "{message}");
    assert!(!message.contains("password-password"), "{message}");
}
