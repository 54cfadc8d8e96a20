//! The build step on whole objects: a YAML `DiLoCoServer` in, every child out, compared with
//! golden YAML files in `fixtures/` (regenerate with `UPDATE_FIXTURES=1 cargo test -p
//! diloco-operator`, then review the diff: the fixtures are the contract).

use std::collections::BTreeMap;
use std::path::PathBuf;

use jiff::Timestamp;
use serde::Serialize;

use diloco_crds::DiLoCoServer;

use super::*;
use crate::pki::KeyedCertificate;
use crate::reconcile::certificates::{LeafRole, PkiPlan, StoredCa, StoredLeaf};
use crate::reconcile::token::TokenPlan;

mod console;

const TOKEN: &str = "fixture-token-0123456789abcdef";
const ADMIN_TOKEN: &str = "fixture-admin-token-fedcba9876543210";

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/reconcile/build/fixtures")
        .join(name)
}

fn server(name: &str) -> DiLoCoServer {
    let text = std::fs::read_to_string(fixture_path(name)).unwrap();
    serde_norway::from_str(&text).unwrap()
}

fn keyed(what: &str) -> KeyedCertificate {
    KeyedCertificate {
        cert_pem: format!("-----BEGIN CERTIFICATE-----\n{what}\n-----END CERTIFICATE-----\n"),
        key_pem: format!("-----BEGIN PRIVATE KEY-----\n{what}\n-----END PRIVATE KEY-----\n"),
    }
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn leaf(what: &str) -> StoredLeaf {
    StoredLeaf {
        keyed: keyed(what),
        issuer_fingerprint: "ca-fingerprint".into(),
        subject_fingerprint: format!("{what}-subject"),
        handled_nonce: None,
        not_after: at("2027-03-01T00:00:00Z"),
    }
}

fn owned_pki(clients: &[&str]) -> PkiPlan {
    let mut leaves = BTreeMap::from([
        (LeafRole::Server, leaf("server")),
        (LeafRole::Operator, leaf("operator")),
    ]);
    for client in clients {
        leaves.insert(LeafRole::Client(client.to_string()), leaf(client));
    }
    PkiPlan {
        ca: StoredCa {
            trust_bundle: keyed("ca").cert_pem,
            keyed: keyed("ca"),
            handled_nonce: Some("ca-nonce-1".into()),
            previous_valid_until: None,
            not_after: at("2031-12-01T00:00:00Z"),
        },
        leaves,
        actions: Vec::new(),
        next_change: at("2027-02-14T00:00:00Z"),
    }
}

fn token_plan(token: &str) -> TokenPlan {
    TokenPlan {
        data: BTreeMap::from([("token".to_string(), token.to_string())]),
        handled_nonce: Some("nonce-1".into()),
        rotated_at: None,
        previous_valid_until: None,
        action: None,
    }
}

fn owned_credentials() -> Credentials {
    Credentials {
        token: TokenSource::Owned(token_plan(TOKEN)),
        admin_token: Some(token_plan(ADMIN_TOKEN)),
        tls: TlsSource::Owned(owned_pki(&[])),
    }
}

fn built(server: &DiLoCoServer, credentials: &Credentials) -> DesiredObjects {
    let settings = crate::settings::Settings::default();
    let ctx = BuildContext::new(server, &settings).unwrap();
    build(&ctx, credentials).unwrap()
}

/// Compares `actual` with the golden file `name` (or rewrites it with UPDATE_FIXTURES=1).
fn assert_golden(name: &str, actual: &impl Serialize) {
    let actual = serde_json::to_value(actual).unwrap();
    let path = fixture_path(name);
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        let header = "# Golden output of the build step (see reconcile/build/tests.rs).\n";
        std::fs::write(
            &path,
            format!("{header}{}", serde_norway::to_string(&actual).unwrap()),
        )
        .unwrap();
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing {}: run with UPDATE_FIXTURES=1", path.display()));
    let expected: serde_json::Value = serde_norway::from_str(&text).unwrap();
    assert!(
        expected == actual,
        "{name} differs from the build output:\n{}",
        serde_norway::to_string(&actual).unwrap()
    );
}

fn names<K: kube::ResourceExt>(objects: &[K]) -> Vec<String> {
    objects.iter().map(|o| o.name_any()).collect()
}

/// Every child of the minimal server, by kind and name, each owned by the server and carrying
/// the five standard labels.
#[test]
fn a_minimal_server_gets_every_child_labelled_and_owned() {
    let desired = built(&server("minimal.yaml"), &owned_credentials());
    assert_eq!(
        names(&desired.secrets),
        [
            "llm-token",
            "llm-admin-token",
            "llm-ca",
            "llm-server-tls",
            "llm-operator-client-tls",
            "llm-worker-credentials"
        ]
    );
    assert_eq!(
        names(&desired.config_maps),
        ["llm-coordinator-config", "llm-clients"]
    );
    assert_eq!(names(&desired.services), ["llm-control", "llm-bulk"]);
    // No metrics policy without `metricsFrom`: no policy admits the port, so nobody may.
    assert_eq!(
        names(&desired.network_policies),
        ["llm-control", "llm-bulk", "llm-egress"]
    );
    assert_eq!(names(&desired.service_accounts), ["llm-coordinator"]);
    assert_eq!(names(&desired.deployments), ["llm-coordinator"]);
    assert_eq!(names(&desired.claims), ["llm-state"]);

    let mut metas: Vec<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta> = Vec::new();
    metas.extend(desired.secrets.iter().map(|o| &o.metadata));
    metas.extend(desired.config_maps.iter().map(|o| &o.metadata));
    metas.extend(desired.services.iter().map(|o| &o.metadata));
    metas.extend(desired.network_policies.iter().map(|o| &o.metadata));
    metas.extend(desired.service_accounts.iter().map(|o| &o.metadata));
    metas.extend(desired.deployments.iter().map(|o| &o.metadata));
    for meta in metas {
        let labels = meta.labels.as_ref().unwrap();
        for key in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
            "app.kubernetes.io/managed-by",
            "diloco.dev/server",
        ] {
            assert!(labels.contains_key(key), "{:?} lacks {key}", meta.name);
        }
        let owners = meta.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].uid, "6f1c1a6e-0000-4000-8000-000000000001");
        assert_eq!(owners[0].controller, Some(true));
        assert_eq!(meta.namespace.as_deref(), Some("ml"));
    }
    // The audit volume outlives the server by default: no owner reference.
    assert_eq!(desired.claims[0].metadata.owner_references, None);
}

/// The coordinator Deployment of the minimal server, whole.
#[test]
fn minimal_deployment_matches_its_fixture() {
    let desired = built(&server("minimal.yaml"), &owned_credentials());
    assert_golden("minimal-deployment.yaml", &desired.deployments[0]);
}

/// The coordinator configuration of the minimal server, whole.
#[test]
fn minimal_coordinator_config_matches_its_fixture() {
    let desired = built(&server("minimal.yaml"), &owned_credentials());
    assert_golden("minimal-config.yaml", &desired.config_maps[0]);
}

/// Services and NetworkPolicies of the minimal server, whole.
/// What the operator renders is a configuration the coordinator reads back unchanged (its
/// `Config` refuses unknown keys), with the spec's values and the coordinator's own limits.
#[test]
fn the_rendered_config_reads_back_as_the_coordinator_s_configuration() {
    use diloco_contract::config::{Config, Device as ConfigDevice};
    use diloco_contract::wire::dtype::WireDtype as ConfigDtype;
    let mut server = server("minimal.yaml");
    server.spec.device = diloco_crds::Device::Cuda;
    let training = &mut server.spec.training;
    training.min_workers = 3;
    training.sync_every = 40;
    training.upload_dtype = diloco_crds::WireDtype::Fp32;
    training.outer_optimizer.lr = 0.5;
    training.outer_optimizer.nesterov = false;
    training.token_budget = Some(2_000_000);
    let desired = built(&server, &owned_credentials());
    let text = config_map_text(&desired, "llm-coordinator-config", "coordinator.yaml");
    let parsed: Config = serde_norway::from_str(&text).unwrap();
    assert_eq!(parsed.device, ConfigDevice::Cuda);
    assert_eq!(parsed.training.min_workers, 3);
    assert_eq!(parsed.training.sync_every, 40);
    assert_eq!(parsed.training.upload_dtype, ConfigDtype::Fp32);
    assert_eq!(parsed.training.outer_optimizer.lr, 0.5);
    assert!(!parsed.training.outer_optimizer.nesterov);
    assert_eq!(parsed.training.token_budget, 2_000_000);
    assert_eq!(parsed.listen, "0.0.0.0:8512".parse().unwrap());
    assert_eq!(parsed.limits, Default::default());
    parsed.validate().unwrap();
}

/// A spec that slipped past the schema (a negative count, a port out of range) is an
/// invalid spec, not a configuration with a wrapped-around number.
#[test]
fn a_count_or_port_out_of_range_is_an_invalid_spec() {
    let settings = crate::settings::Settings::default();
    let credentials = owned_credentials();
    let mut negative = server("minimal.yaml");
    negative.spec.training.sync_every = -1;
    let ctx = BuildContext::new(&negative, &settings).unwrap();
    let error = build(&ctx, &credentials).unwrap_err();
    assert!(
        matches!(&error, crate::error::Error::InvalidSpec(m) if m.contains("training.syncEvery -1")),
        "{error}"
    );
    let mut off_range = server("minimal.yaml");
    off_range.spec.control.port = 70000;
    let ctx = BuildContext::new(&off_range, &settings).unwrap();
    let error = build(&ctx, &credentials).unwrap_err();
    assert!(
        matches!(&error, crate::error::Error::InvalidSpec(m) if m.contains("control.port 70000")),
        "{error}"
    );
}

#[test]
fn minimal_network_objects_match_their_fixture() {
    let desired = built(&server("minimal.yaml"), &owned_credentials());
    assert_golden(
        "minimal-network.yaml",
        &(&desired.services, &desired.network_policies),
    );
}

/// Credential Secrets of the minimal server, whole (with placeholder PEM).
#[test]
fn minimal_secrets_match_their_fixture() {
    let desired = built(&server("minimal.yaml"), &owned_credentials());
    assert_golden("minimal-secrets.yaml", &desired.secrets);
}

/// Every scheduling knob reaches the pod; the user's token Secret is mounted, not copied
/// into a Secret of ours; named clients get a bundle with their certificate.
#[test]
fn everything_server_matches_its_fixture() {
    let server = server("everything.yaml");
    let credentials = Credentials {
        token: TokenSource::Referenced {
            secret: "my-token".into(),
            token: TOKEN.into(),
        },
        admin_token: Some(token_plan(ADMIN_TOKEN)),
        tls: TlsSource::Owned(owned_pki(&["site-a"])),
    };
    let desired = built(&server, &credentials);
    assert_golden("everything-children.yaml", &desired_json(&desired));
}

fn secret_data(desired: &DesiredObjects, name: &str) -> BTreeMap<String, String> {
    let secret = desired
        .secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some(name));
    secret
        .unwrap_or_else(|| panic!("no Secret {name}"))
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.0.clone()).unwrap()))
        .collect()
}

fn config_map_text(desired: &DesiredObjects, name: &str, key: &str) -> String {
    let map = desired
        .config_maps
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some(name));
    map.unwrap_or_else(|| panic!("no ConfigMap {name}"))
        .data
        .as_ref()
        .unwrap()[key]
        .clone()
}

/// A named client authenticates with its certificate alone: its bundle has no bearer token,
/// so removing it from `tls.clients` (and so from the client list) really locks it out.
#[test]
fn a_named_clients_bundle_carries_its_certificate_but_no_bearer_token() {
    let mut server = server("minimal.yaml");
    server.spec.tls.clients = vec![diloco_crds::TlsClient {
        name: "site-a".into(),
    }];
    let mut credentials = owned_credentials();
    credentials.tls = TlsSource::Owned(owned_pki(&["site-a"]));
    let desired = built(&server, &credentials);
    let bundle = secret_data(&desired, "llm-client-site-a");
    assert_eq!(
        bundle.keys().collect::<Vec<_>>(),
        ["ca.crt", "endpoints.json", "tls.crt", "tls.key"]
    );
    assert!(
        !bundle
            .values()
            .any(|v| v.contains(TOKEN) || v.contains(ADMIN_TOKEN))
    );
    assert_eq!(
        secret_data(&desired, "llm-worker-credentials")["token"],
        TOKEN
    );
    let clients: serde_json::Value =
        serde_json::from_str(&config_map_text(&desired, "llm-clients", "clients.json")).unwrap();
    assert_eq!(
        clients,
        serde_json::json!({"clients": [
            {"name": "diloco-operator", "role": "admin"},
            {"name": "site-a", "role": "worker"},
        ]})
    );
}

/// The admin token is a Secret of its own, mounted for the coordinator and never in a
/// worker's bundle.
#[test]
fn the_admin_token_is_mounted_and_never_bundled() {
    let desired = built(&server("minimal.yaml"), &owned_credentials());
    assert_eq!(
        secret_data(&desired, "llm-admin-token")["token"],
        ADMIN_TOKEN
    );
    let bundles = serde_json::to_string(
        &desired
            .secrets
            .iter()
            .filter(|s| s.metadata.name.as_deref() != Some("llm-admin-token"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert!(!bundles.contains(&base64_of(ADMIN_TOKEN)), "{bundles}");
    let config = config_map_text(&desired, "llm-coordinator-config", "coordinator.yaml");
    assert!(
        config.contains("admin_token_dir: /var/run/diloco/admin-token"),
        "{config}"
    );
    assert!(
        config.contains("clients_file: /etc/diloco/clients/clients.json"),
        "{config}"
    );
}

fn base64_of(text: &str) -> String {
    serde_json::to_value(k8s_openapi::ByteString(text.as_bytes().to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

/// `tls.mode: secret` with a dedicated client CA: it is mounted and is the one client
/// certificates must chain to; named clients become the client list.
#[test]
fn a_dedicated_client_ca_is_mounted_and_verifies_clients() {
    let mut server = server("minimal.yaml");
    server.spec.tls.mode = diloco_crds::TlsMode::Secret;
    server.spec.tls.secret_name = Some("cert-manager-tls".into());
    server.spec.tls.allowed_client_names = Some(vec![diloco_crds::ClientName("site-b".into())]);
    let mut credentials = owned_credentials();
    credentials.tls = TlsSource::Referenced {
        secret: "cert-manager-tls".into(),
        ca_bundle: Some(keyed("issuer").cert_pem),
        client_ca_secret: Some("clients-ca".into()),
    };
    let desired = built(&server, &credentials);
    let config = config_map_text(&desired, "llm-coordinator-config", "coordinator.yaml");
    assert!(
        config.contains("client_ca: /etc/diloco/client-ca/ca.crt"),
        "{config}"
    );
    let pod = desired.deployments[0].spec.template.spec.as_ref().unwrap();
    let client_ca = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "client-ca")
        .unwrap();
    assert_eq!(
        client_ca.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("clients-ca")
    );
    let clients = config_map_text(&desired, "llm-clients", "clients.json");
    assert!(
        clients.contains("\"site-b\"") && !clients.contains("diloco-operator"),
        "{clients}"
    );
}

/// A cleartext bulk plane is something the spec chose; the coordinator is told so explicitly.
#[test]
fn a_cleartext_bulk_plane_is_acknowledged_in_the_config() {
    let mut server = server("minimal.yaml");
    let secure = config_map_text(
        &built(&server, &owned_credentials()),
        "llm-coordinator-config",
        "coordinator.yaml",
    );
    assert!(secure.contains("insecure: false"), "{secure}");
    server.spec.bulk.tls = false;
    server.spec.bulk.auth = false;
    let clear = config_map_text(
        &built(&server, &owned_credentials()),
        "llm-coordinator-config",
        "coordinator.yaml",
    );
    assert!(clear.contains("insecure: true"), "{clear}");
}

#[test]
fn metrics_from_gets_a_policy_of_its_own() {
    let mut server = server("minimal.yaml");
    server.spec.network_policy.metrics_from = Some(vec![
        serde_json::from_value(
            serde_json::json!({"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}),
        )
        .unwrap(),
    ]);
    let desired = built(&server, &owned_credentials());
    let metrics = desired
        .network_policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("llm-metrics"))
        .unwrap();
    let json = serde_json::to_string(metrics).unwrap();
    assert!(
        json.contains("monitoring") && json.contains("\"metrics\""),
        "{json}"
    );
}

fn desired_json(desired: &DesiredObjects) -> serde_json::Value {
    serde_json::json!({
        "secrets": desired.secrets,
        "configMaps": desired.config_maps,
        "serviceAccounts": desired.service_accounts,
        "claims": desired.claims,
        "services": desired.services,
        "networkPolicies": desired.network_policies,
        "deployments": desired.deployments,
    })
}

#[test]
fn switching_the_bulk_plane_off_drops_its_service_policy_port_and_config() {
    let mut server = server("minimal.yaml");
    server.spec.bulk.enabled = false;
    let desired = built(&server, &owned_credentials());
    assert_eq!(names(&desired.services), ["llm-control"]);
    assert_eq!(
        names(&desired.network_policies),
        ["llm-control", "llm-egress"]
    );
    let json = serde_json::to_string(&desired.deployments).unwrap();
    assert!(!json.contains("\"bulk\""), "{json}");
    let config = &desired.config_maps[0].data.as_ref().unwrap()["coordinator.yaml"];
    assert!(!config.contains("bulk"), "{config}");
}

#[test]
fn disabled_network_policies_build_none() {
    let mut server = server("minimal.yaml");
    server.spec.network_policy.enabled = false;
    assert!(
        built(&server, &owned_credentials())
            .network_policies
            .is_empty()
    );
}

/// A model in the image: its paths go to the config as they are, and no volume is added.
#[test]
fn a_model_in_the_image_is_configured_without_a_volume() {
    let mut server = server("minimal.yaml");
    server.spec.model = Some(diloco_crds::ModelSpec {
        claim_name: None,
        initial_parameters: Some("/models/llm".into()),
        definition: Some("/models/llm-def".into()),
    });
    let desired = built(&server, &owned_credentials());
    let config = config_map_text(&desired, "llm-coordinator-config", "coordinator.yaml");
    let config: diloco_contract::config::Config = serde_norway::from_str(&config).unwrap();
    assert_eq!(
        config.model.initial_parameters.as_deref(),
        Some(std::path::Path::new("/models/llm"))
    );
    assert_eq!(
        config.model.definition_dir.as_deref(),
        Some(std::path::Path::new("/models/llm-def"))
    );
    let pod = desired.deployments[0].spec.template.spec.as_ref().unwrap();
    assert!(pod.volumes.iter().flatten().all(|v| v.name != "model"));
}

#[test]
fn an_existing_claim_is_mounted_and_none_is_created() {
    let mut server = server("minimal.yaml");
    server.spec.audit.existing_claim = Some("audit-archive".into());
    let desired = built(&server, &owned_credentials());
    assert!(desired.claims.is_empty());
    let pod = desired.deployments[0].spec.template.spec.as_ref().unwrap();
    let state = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "state")
        .unwrap();
    assert_eq!(
        state.persistent_volume_claim.as_ref().unwrap().claim_name,
        "audit-archive"
    );
}

#[test]
fn tls_disabled_and_auth_none_give_a_plain_coordinator() {
    let mut server = server("minimal.yaml");
    server.spec.tls.mode = diloco_crds::TlsMode::Disabled;
    server.spec.auth.mode = diloco_crds::AuthMode::None;
    server.spec.bulk.tls = false;
    server.spec.bulk.auth = false;
    let credentials = Credentials {
        token: TokenSource::Disabled,
        admin_token: None,
        tls: TlsSource::Disabled,
    };
    let desired = built(&server, &credentials);
    assert_eq!(names(&desired.secrets), ["llm-worker-credentials"]);
    let config = &desired.config_maps[0].data.as_ref().unwrap()["coordinator.yaml"];
    assert!(config.contains("insecure: true"), "{config}");
    assert!(config.contains("disabled: true"), "{config}");
    assert!(!config.contains("tls:\n"), "{config}");
    let bundle = &desired.secrets[0].data.as_ref().unwrap();
    assert_eq!(bundle.keys().collect::<Vec<_>>(), ["endpoints.json"]);
    let endpoints = String::from_utf8(bundle["endpoints.json"].0.clone()).unwrap();
    assert!(
        endpoints.contains("http://llm-control.ml.svc:8512"),
        "{endpoints}"
    );
}

/// Tokens and keys live only in Secrets: never in the Deployment or the ConfigMap.
#[test]
fn no_credential_leaks_into_the_deployment_or_config() {
    let desired = built(&server("minimal.yaml"), &owned_credentials());
    let visible = serde_json::to_string(&(&desired.deployments, &desired.config_maps)).unwrap();
    assert!(!visible.contains(TOKEN) && !visible.contains(ADMIN_TOKEN));
    assert!(!visible.contains("PRIVATE KEY"));
}

#[test]
fn debug_output_of_credentials_never_shows_a_token_or_key() {
    let mut credentials = owned_credentials();
    let shown = format!("{credentials:?}");
    assert!(
        !shown.contains(TOKEN) && !shown.contains(ADMIN_TOKEN) && !shown.contains("PRIVATE KEY"),
        "{shown}"
    );
    credentials.token = TokenSource::Referenced {
        secret: "team-token".into(),
        token: TOKEN.into(),
    };
    let shown = format!("{credentials:?}");
    assert!(
        !shown.contains(TOKEN) && shown.contains("team-token"),
        "{shown}"
    );
}
