//! The operator against a real kube-apiserver and kube-controller-manager: children appear
//! with the expected content, credentials survive restarts and rotate once per nonce,
//! certificates renew (and follow a load balancer's address), planes switched off lose their
//! children, bad references are reported in conditions, two replicas elect one leader, and
//! deletion garbage-collects everything but the audit claim.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use diloco_crds::DiLoCoServer;
use diloco_tests::LocalCluster;
use diloco_tests::kube_helpers::{apply_server, condition, install_crd, wait_until};
use diloco_tests::operator_process::OperatorProcess;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// A Secret's data as text.
type SecretData = BTreeMap<String, String>;

/// One test's world: a namespace of its own and an operator watching it.
struct World {
    client: Client,
    namespace: String,
    logs: tempfile::TempDir,
    operator: Option<OperatorProcess>,
}

impl World {
    async fn new(prefix: &str) -> Self {
        let cluster = LocalCluster::shared();
        let client = cluster.client().await.unwrap();
        install_crd(&client).await;
        let namespace = cluster.namespace(&client, prefix).await.unwrap();
        let logs = tempfile::tempdir().unwrap();
        let operator = OperatorProcess::start(cluster.kubeconfig(), &namespace, logs.path(), &[]);
        Self {
            client,
            namespace,
            logs,
            operator: Some(operator),
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn restart_operator(&mut self) {
        if let Some(operator) = self.operator.take() {
            operator.stop();
        }
        self.operator = Some(OperatorProcess::start(
            LocalCluster::shared().kubeconfig(),
            &self.namespace,
            self.logs.path(),
            &[],
        ));
    }

    fn operator_log(&self) -> String {
        self.operator
            .as_ref()
            .map(|o| o.log_text())
            .unwrap_or_default()
    }

    async fn server(&self, name: &str) -> DiLoCoServer {
        self.api::<DiLoCoServer>().get(name).await.unwrap()
    }

    async fn secret_data(&self, name: &str) -> Option<SecretData> {
        let secret = self.api::<Secret>().get_opt(name).await.unwrap()?;
        Some(
            secret
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8(v.0).unwrap()))
                .collect(),
        )
    }

    /// Applies the `DiLoCoServer` `name` with `annotations` and `spec`.
    async fn apply(&self, name: &str, annotations: serde_json::Value, spec: serde_json::Value) {
        apply_server(&self.client, &self.namespace, name, annotations, spec).await;
    }

    /// Polls until server `llm`'s coordinator config contains `text`.
    async fn wait_config_contains(&self, text: &str, what: &str) {
        wait_until(Duration::from_secs(10), what, || async {
            let config = self
                .api::<ConfigMap>()
                .get("llm-coordinator-config")
                .await
                .ok()?;
            config
                .data?
                .get("coordinator.yaml")?
                .contains(text)
                .then_some(())
        })
        .await
    }

    /// Polls server `llm` until `accept` holds for it, and returns it.
    async fn wait_server(
        &self,
        what: &str,
        seconds: u64,
        accept: impl Fn(&DiLoCoServer) -> bool,
    ) -> DiLoCoServer {
        wait_until(Duration::from_secs(seconds), what, || async {
            Some(self.server("llm").await).filter(|server| accept(server))
        })
        .await
    }

    /// Polls Secret `name` until `accept` holds for its data, and returns the data.
    async fn wait_secret(
        &self,
        name: &str,
        what: &str,
        seconds: u64,
        accept: impl Fn(&SecretData) -> bool,
    ) -> SecretData {
        wait_until(Duration::from_secs(seconds), what, || async {
            self.secret_data(name).await.filter(|data| accept(data))
        })
        .await
    }

    /// Names of the objects of kind `K` labelled as children of `server`.
    async fn children<K>(&self, server: &str) -> Vec<String>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let selector = format!("diloco.dev/server={server}");
        let mut names: Vec<String> = self
            .api::<K>()
            .list_metadata(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|o| o.metadata.deletion_timestamp.is_none())
            .map(|o| o.name_any())
            .collect();
        names.sort();
        names
    }
}

fn example_spec() -> serde_json::Value {
    let text = std::fs::read_to_string(
        diloco_tests::local_cluster::repo_root().join("examples/diloco.yaml"),
    )
    .unwrap();
    let example: serde_json::Value = serde_norway::from_str(&text).unwrap();
    example["spec"].clone()
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_example_gets_every_child_with_its_content_within_ten_seconds() {
    let world = World::new("op-example").await;
    let applied = Instant::now();
    world.apply("llm", json!({}), example_spec()).await;
    wait_until(
        Duration::from_secs(10),
        "every child of the example",
        || async {
            let complete = world.children::<Secret>("llm").await.len() == 6
                && world.children::<ConfigMap>("llm").await.len() == 2
                && world.children::<Service>("llm").await.len() == 2
                && world.children::<NetworkPolicy>("llm").await.len() == 3
                && world.children::<ServiceAccount>("llm").await.len() == 1
                && world.children::<PersistentVolumeClaim>("llm").await.len() == 1
                && world.children::<Deployment>("llm").await.len() == 1;
            complete.then_some(())
        },
    )
    .await;
    eprintln!(
        "every child applied {:?} after the DiLoCoServer",
        applied.elapsed()
    );

    assert_eq!(
        world.children::<Secret>("llm").await,
        sorted(&[
            "llm-admin-token",
            "llm-ca",
            "llm-operator-client-tls",
            "llm-server-tls",
            "llm-token",
            "llm-worker-credentials"
        ])
    );
    assert_eq!(
        world.children::<NetworkPolicy>("llm").await,
        sorted(&["llm-bulk", "llm-control", "llm-egress"]),
        "no metrics policy: nobody may scrape until metricsFrom says who"
    );
    let token = world.secret_data("llm-token").await.unwrap();
    assert_eq!(token["token"].len(), 64, "a 256-bit hex token");
    let admin = world.secret_data("llm-admin-token").await.unwrap();
    assert_eq!(admin["token"].len(), 64, "a 256-bit hex admin token");
    assert_ne!(admin["token"], token["token"]);
    let tls = world.api::<Secret>().get("llm-server-tls").await.unwrap();
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
    let tls_keys: Vec<_> = tls.data.unwrap().into_keys().collect();
    assert_eq!(tls_keys, ["ca.crt", "tls.crt", "tls.key"]);
    let bundle = world.secret_data("llm-worker-credentials").await.unwrap();
    assert_eq!(bundle["token"], token["token"]);
    assert!(
        !bundle.values().any(|v| v.contains(&admin["token"])),
        "workers never get the admin token"
    );
    let endpoints: serde_json::Value = serde_json::from_str(&bundle["endpoints.json"]).unwrap();
    let ns = &world.namespace;
    assert_eq!(
        endpoints,
        json!({"control": format!("https://llm-control.{ns}.svc:8512"),
               "bulk": format!("https://llm-bulk.{ns}.svc:8513")})
    );
    let deployment = world
        .api::<Deployment>()
        .get("llm-coordinator")
        .await
        .unwrap();
    let spec = deployment.spec;
    assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    let json = serde_json::to_string(&pod).unwrap();
    assert!(
        !json.contains(&token["token"]),
        "the token is never in the pod spec"
    );
    let claim = world
        .api::<PersistentVolumeClaim>()
        .get("llm-state")
        .await
        .unwrap();
    assert_eq!(
        claim.metadata.owner_references, None,
        "retainOnDelete by default"
    );

    let server = wait_until(
        Duration::from_secs(10),
        "status with conditions",
        || async {
            let server = world.server("llm").await;
            condition(&server, "CredentialsReady")
                .is_some()
                .then_some(server)
        },
    )
    .await;
    let status = server.status.clone().unwrap();
    assert_eq!(
        condition(&server, "CredentialsReady").unwrap().status,
        "True"
    );
    assert_eq!(condition(&server, "NetworkReady").unwrap().status, "True");
    let available = condition(&server, "CoordinatorAvailable").unwrap();
    assert_eq!(available.status, "False", "no pod runs here: {available:?}");
    assert_eq!(condition(&server, "Ready").unwrap().status, "False");
    assert_eq!(
        condition(&server, "Ready").unwrap().observed_generation,
        server.metadata.generation
    );
    assert_eq!(
        status.endpoints.unwrap().control.as_deref(),
        Some(format!("https://llm-control.{ns}.svc:8512").as_str())
    );
    assert!(status.certificates.unwrap().not_after.is_some());
    let log = world.operator_log();
    assert!(
        !log.contains(&token["token"]),
        "the token never reaches the log"
    );
    assert!(!log.contains("PRIVATE KEY"));
}

type SecretSnapshot = BTreeMap<String, (String, Option<BTreeMap<String, k8s_openapi::ByteString>>)>;

/// Every Secret of server `llm`: name → (resourceVersion, data).
async fn secrets_snapshot(world: &World) -> SecretSnapshot {
    let secrets = world
        .api::<Secret>()
        .list(&ListParams::default().labels("diloco.dev/server=llm"))
        .await
        .unwrap();
    secrets
        .items
        .into_iter()
        .map(|s| {
            (
                s.name_any(),
                (s.resource_version().unwrap_or_default(), s.data),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_restarted_operator_changes_no_secret() {
    let mut world = World::new("op-restart").await;
    world.apply("llm", json!({}), example_spec()).await;
    wait_until(Duration::from_secs(10), "the six Secrets", || async {
        (secrets_snapshot(&world).await.len() == 6).then_some(())
    })
    .await;
    // Let the first reconciles settle (status, the Deployment's first status).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = secrets_snapshot(&world).await;
    world.restart_operator();
    // The new operator reconciles everything at start; give it time to do so.
    let url = world.operator.as_ref().unwrap().metrics_url.clone();
    let http = diloco_tests::http_client();
    wait_until(
        Duration::from_secs(15),
        "a reconcile by the new operator",
        || async {
            let samples = diloco_tests::metrics(&http, &url, None).await;
            (samples
                .get("diloco_operator_reconciles_total")
                .copied()
                .unwrap_or(0.0)
                >= 1.0)
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        secrets_snapshot(&world).await,
        before,
        "same data, same resourceVersion"
    );
}

#[tokio::test]
async fn a_new_rotate_token_value_rotates_once_with_a_grace_period() {
    let world = World::new("op-rotate").await;
    world.apply("llm", json!({}), example_spec()).await;
    let first = world
        .wait_secret("llm-token", "the token", 10, |_| true)
        .await;

    let rotate = json!({"diloco.dev/rotate-token": "2026-12-02T10:00"});
    let asked = jiff::Timestamp::now();
    world.apply("llm", rotate.clone(), example_spec()).await;
    let rotated = world
        .wait_secret("llm-token", "a rotated token", 10, |data| {
            data["token"] != first["token"]
        })
        .await;
    assert_eq!(rotated["previous-token"], first["token"]);
    let until: jiff::Timestamp = rotated["previous-valid-until"].parse().unwrap();
    let grace = until.duration_since(asked).as_secs();
    assert!(
        (14 * 60..=16 * 60).contains(&grace),
        "15 minute grace period, got {grace} s"
    );
    let bundle = world
        .wait_secret(
            "llm-worker-credentials",
            "the worker bundle in step",
            10,
            |bundle| bundle["token"] == rotated["token"],
        )
        .await;
    assert_eq!(bundle["token"], rotated["token"]);
    let server = wait_until(
        Duration::from_secs(10),
        "the handled nonce in status",
        || async {
            let server = world.server("llm").await;
            let observed = server
                .status
                .as_ref()?
                .token_rotation
                .as_ref()?
                .observed_nonce
                .clone();
            (observed.as_deref() == Some("2026-12-02T10:00")).then_some(server)
        },
    )
    .await;
    assert!(
        server
            .status
            .unwrap()
            .token_rotation
            .unwrap()
            .previous_valid_until
            .is_some()
    );

    // The same manifest again (plus a spec change that forces a reconcile): no new rotation.
    let mut spec = example_spec();
    spec["training"] = json!({"syncEvery": 42});
    world.apply("llm", rotate, spec).await;
    world
        .wait_config_contains("sync_every: 42", "the spec change reconciled")
        .await;
    assert_eq!(world.secret_data("llm-token").await.unwrap(), rotated);
}

#[tokio::test]
async fn switching_off_the_bulk_plane_and_network_policies_removes_their_children() {
    let world = World::new("op-shrink").await;
    world.apply("llm", json!({}), example_spec()).await;
    wait_until(Duration::from_secs(10), "three NetworkPolicies", || async {
        (world.children::<NetworkPolicy>("llm").await.len() == 3).then_some(())
    })
    .await;
    let mut spec = example_spec();
    spec["bulk"] = json!({"enabled": false});
    world.apply("llm", json!({}), spec.clone()).await;
    wait_until(
        Duration::from_secs(10),
        "the bulk Service and policy gone",
        || async {
            let services = world.children::<Service>("llm").await;
            let policies = world.children::<NetworkPolicy>("llm").await;
            (services == ["llm-control"] && !policies.contains(&"llm-bulk".to_string()))
                .then_some(())
        },
    )
    .await;
    spec["networkPolicy"] = json!({"enabled": false});
    world.apply("llm", json!({}), spec).await;
    wait_until(
        Duration::from_secs(10),
        "every NetworkPolicy gone",
        || async {
            world
                .children::<NetworkPolicy>("llm")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    let server = world.server("llm").await;
    assert!(server.status.unwrap().endpoints.unwrap().bulk.is_none());
}

#[tokio::test]
async fn a_missing_token_secret_is_reported_then_picked_up() {
    let world = World::new("op-tokenref").await;
    let mut spec = example_spec();
    spec["auth"] = json!({"tokenSecretRef": {"name": "team-token"}});
    world.apply("llm", json!({}), spec).await;
    let server = world
        .wait_server("CredentialsReady=False", 10, |server| {
            condition(server, "CredentialsReady").is_some_and(|c| c.status == "False")
        })
        .await;
    let credentials = condition(&server, "CredentialsReady").unwrap();
    assert_eq!(credentials.reason, "TokenSecretNotFound");
    assert!(
        credentials.message.contains("team-token"),
        "{credentials:?}"
    );
    assert_eq!(
        condition(&server, "Ready").unwrap().reason,
        "TokenSecretNotFound"
    );
    assert!(world.children::<Deployment>("llm").await.is_empty());

    let token = "Xq3-vT9_kLm2pR8sW4zN6bY1cH7dJ5fG-team";
    let secret: Secret = serde_json::from_value(json!({
        // The owner's consent to be used by a DiLoCoServer (docs/security.md).
        "metadata": {"name": "team-token", "labels": {"diloco.dev/referable": "true"}},
        "stringData": {"token": token},
    }))
    .unwrap();
    world
        .api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    world
        .wait_server("CredentialsReady=True", 30, |server| {
            condition(server, "CredentialsReady").is_some_and(|c| c.status == "True")
        })
        .await;
    assert!(
        world
            .children::<Secret>("llm")
            .await
            .iter()
            .all(|n| n != "llm-token")
    );
    let bundle = world.secret_data("llm-worker-credentials").await.unwrap();
    assert_eq!(bundle["token"], token);
    let user_secret = world.api::<Secret>().get("team-token").await.unwrap();
    assert!(
        user_secret.metadata.owner_references.is_none(),
        "the user's Secret is never written"
    );
    assert_eq!(
        user_secret.metadata.labels.unwrap().len(),
        1,
        "only the user's own label"
    );
}

#[tokio::test]
async fn short_lived_certificates_renew_and_rotate_ca_rolls_over() {
    let world = World::new("op-pki").await;
    let mut spec = example_spec();
    spec["tls"] = json!({"certificateDuration": "40s", "renewBefore": "30s"});
    world.apply("llm", json!({}), spec.clone()).await;
    let first = world
        .wait_secret("llm-server-tls", "the server certificate", 10, |_| true)
        .await;
    let ca = world.secret_data("llm-ca").await.unwrap();
    // Renewal is due 10 s after issuance.
    let renewed = world
        .wait_secret(
            "llm-server-tls",
            "a renewed server certificate",
            25,
            |data| data["tls.crt"] != first["tls.crt"],
        )
        .await;
    assert_ne!(
        renewed["tls.key"], first["tls.key"],
        "a new key with each certificate"
    );
    assert_eq!(
        world.secret_data("llm-ca").await.unwrap(),
        ca,
        "the CA is unchanged"
    );

    world
        .apply("llm", json!({"diloco.dev/rotate-ca": "1"}), spec)
        .await;
    let rolled = world
        .wait_secret("llm-ca", "a new CA", 10, |data| {
            data["tls.crt"] != ca["tls.crt"]
        })
        .await;
    assert_eq!(
        rolled["ca.crt"],
        format!("{}{}", rolled["tls.crt"], ca["tls.crt"]),
        "both CAs trusted during the overlap"
    );
    let leaf = world
        .wait_secret(
            "llm-server-tls",
            "the leaf re-issued by the new CA",
            10,
            |data| data["ca.crt"] == rolled["ca.crt"],
        )
        .await;
    assert_ne!(leaf["tls.crt"], renewed["tls.crt"]);
    // The worker bundle is applied right after the leaves.
    world
        .wait_secret(
            "llm-worker-credentials",
            "the worker bundle with both CAs",
            5,
            |bundle| bundle["ca.crt"] == rolled["ca.crt"],
        )
        .await;
}

#[tokio::test]
async fn deleting_the_server_collects_its_children_but_keeps_the_audit_claim() {
    let world = World::new("op-delete").await;
    world.apply("llm", json!({}), example_spec()).await;
    wait_until(Duration::from_secs(10), "the Deployment", || async {
        (!world.children::<Deployment>("llm").await.is_empty()).then_some(())
    })
    .await;
    world
        .api::<DiLoCoServer>()
        .delete("llm", &DeleteParams::foreground())
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(60),
        "children garbage-collected",
        || async {
            let gone = world.children::<Secret>("llm").await.is_empty()
                && world.children::<Deployment>("llm").await.is_empty()
                && world.children::<Service>("llm").await.is_empty()
                && world.children::<NetworkPolicy>("llm").await.is_empty()
                && world.children::<ConfigMap>("llm").await.is_empty();
            gone.then_some(())
        },
    )
    .await;
    assert_eq!(
        world.children::<PersistentVolumeClaim>("llm").await,
        ["llm-state"],
        "the audit claim outlives the server"
    );
}

#[tokio::test]
async fn an_invalid_spec_is_a_condition_with_backoff_not_a_hot_loop() {
    let world = World::new("op-invalid").await;
    let mut spec = example_spec();
    // Passes the schema, but renewal would be continuous.
    spec["tls"] = json!({"certificateDuration": "1h", "renewBefore": "2h"});
    world.apply("llm", json!({}), spec).await;
    let server = world
        .wait_server("Ready=False InvalidSpec", 10, |server| {
            condition(server, "Ready").is_some_and(|c| c.reason == "InvalidSpec")
        })
        .await;
    let ready = condition(&server, "Ready").unwrap();
    assert!(ready.message.contains("tls.renewBefore"), "{ready:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let attempts = world.operator_log().matches("reconcile failed").count();
    assert!(
        (1..=4).contains(&attempts),
        "exponential backoff: {attempts} attempts in ~5 s\n{}",
        world.operator_log()
    );
    let events = Api::<k8s_openapi::api::events::v1::Event>::namespaced(
        world.client.clone(),
        &world.namespace,
    )
    .list(&ListParams::default())
    .await
    .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some("InvalidSpec")),
        "a Warning event explains it"
    );
}

#[tokio::test]
async fn a_load_balancer_address_joins_the_certificate_once_assigned() {
    let world = World::new("op-lb").await;
    let mut spec = example_spec();
    spec["control"] = json!({"service": {"type": "LoadBalancer"}});
    world.apply("llm", json!({}), spec).await;
    let server = world
        .wait_server("NetworkReady=False", 10, |server| {
            condition(server, "NetworkReady").is_some_and(|c| c.status == "False")
        })
        .await;
    assert_eq!(
        condition(&server, "NetworkReady").unwrap().reason,
        "LoadBalancerPending"
    );
    let before = world
        .wait_secret("llm-server-tls", "the server certificate", 10, |_| true)
        .await;
    assert!(!certificate_text(&before["tls.crt"]).contains("203.0.113.10"));

    // Play the cloud's load-balancer controller.
    world
        .api::<Service>()
        .patch_status(
            "llm-control",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({
                "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}
            })),
        )
        .await
        .unwrap();
    let after = world
        .wait_secret(
            "llm-server-tls",
            "a certificate for the address",
            10,
            |data| data["tls.crt"] != before["tls.crt"],
        )
        .await;
    let text = certificate_text(&after["tls.crt"]);
    assert!(text.contains("IP Address:203.0.113.10"), "{text}");
    assert!(
        text.contains("DNS:llm-control.") && text.contains("DNS:llm-bulk."),
        "{text}"
    );
    world
        .wait_server("NetworkReady=True", 10, |server| {
            condition(server, "NetworkReady").is_some_and(|c| c.status == "True")
        })
        .await;
}

/// `openssl x509 -text` of a PEM certificate.
fn certificate_text(pem: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_hand_over_on_shutdown() {
    let mut world = World::new("op-leader").await;
    let second = OperatorProcess::start(
        LocalCluster::shared().kubeconfig(),
        &world.namespace,
        world.logs.path(),
        &[],
    );
    world.apply("llm", json!({}), example_spec()).await;
    world
        .wait_secret("llm-token", "the token", 10, |_| true)
        .await;
    let first_leads = world.operator_log().contains("became the leader");
    let second_leads = second.log_text().contains("became the leader");
    assert!(
        first_leads != second_leads,
        "exactly one leader: first {first_leads}, second {second_leads}"
    );
    let (leader, follower) = if first_leads {
        (world.operator.take().unwrap(), second)
    } else {
        (second, world.operator.take().unwrap())
    };
    assert!(follower.log_text().contains("another replica leads"));
    assert!(
        !follower.log_text().contains("TokenCreated") && !follower.log_text().contains("minted"),
        "the follower did not reconcile"
    );
    leader.stop();
    wait_until(
        Duration::from_secs(10),
        "the follower to take over",
        || async {
            follower
                .log_text()
                .contains("became the leader")
                .then_some(())
        },
    )
    .await;
    let mut spec = example_spec();
    spec["training"] = json!({"syncEvery": 7});
    world.apply("llm", json!({}), spec).await;
    world
        .wait_config_contains("sync_every: 7", "the new leader reconciling")
        .await;
    world.operator = Some(follower);
}
