//! The console's children of a server: its client certificate Secret, its admin entry in the
//! clients file, the Role that lets only the console's ServiceAccount `get` that one Secret and
//! the RoleBinding, and the console's pods as a control-port peer — and none of it without a
//! console configured.

use std::collections::BTreeMap;

use super::*;
use crate::settings::{ConsoleSettings, Settings};

fn console_settings() -> Settings {
    Settings {
        console: Some(ConsoleSettings {
            namespace: "diloco-system".into(),
            service_account: "diloco-console".into(),
            pod_labels: BTreeMap::from([(
                "app.kubernetes.io/name".to_string(),
                "diloco-console".to_string(),
            )]),
        }),
        ..Settings::default()
    }
}

fn console_credentials() -> Credentials {
    let mut pki = owned_pki(&[]);
    pki.leaves.insert(LeafRole::Console, leaf("console"));
    Credentials {
        tls: TlsSource::Owned(pki),
        ..owned_credentials()
    }
}

fn built_with(
    server: &DiLoCoServer,
    settings: &Settings,
    credentials: &Credentials,
) -> DesiredObjects {
    let ctx = BuildContext::new(server, settings).unwrap();
    build(&ctx, credentials).unwrap()
}

fn control_policy(desired: &DesiredObjects) -> serde_json::Value {
    let policy = desired
        .network_policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("llm-control"))
        .unwrap();
    serde_json::to_value(policy).unwrap()["spec"]["ingress"][0]["from"].clone()
}

/// With a console: the Secret `llm-console-client-tls` (tls.crt, tls.key, ca.crt), the Role
/// `llm-console` allowing only `get` on exactly that Secret, the RoleBinding to
/// `diloco-system/diloco-console`, and the console's pods on the control port — whole.
#[test]
fn a_console_gets_its_certificate_role_binding_and_control_peer() {
    let desired = built_with(
        &server("minimal.yaml"),
        &console_settings(),
        &console_credentials(),
    );
    let console_secret = desired
        .secrets
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("llm-console-client-tls"))
        .expect("the console's certificate Secret");
    assert_golden(
        "console-children.yaml",
        &serde_json::json!({
            "secret": console_secret,
            "roles": desired.roles,
            "roleBindings": desired.role_bindings,
            "controlFrom": control_policy(&desired),
        }),
    );
    let data = secret_data(&desired, "llm-console-client-tls");
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["ca.crt", "tls.crt", "tls.key"],
        "a certificate and nothing else: no token"
    );
    let rules = desired.roles[0].rules.as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].verbs, ["get"]);
    assert_eq!(
        rules[0].resource_names.as_deref(),
        Some(&["llm-console-client-tls".to_string()][..])
    );
}

/// The console's certificate is listed as an admin: it proxies control actions.
#[test]
fn the_console_is_an_admin_in_the_clients_file() {
    let desired = built_with(
        &server("minimal.yaml"),
        &console_settings(),
        &console_credentials(),
    );
    let clients: serde_json::Value =
        serde_json::from_str(&config_map_text(&desired, "llm-clients", "clients.json")).unwrap();
    assert_eq!(
        clients,
        serde_json::json!({"clients": [
            {"name": "diloco-operator", "role": "admin"},
            {"name": "diloco-console", "role": "admin"},
        ]})
    );
}

/// No console configured: no Role, no RoleBinding, no certificate, no clients entry, no peer.
#[test]
fn without_a_console_nothing_of_it_is_built() {
    let desired = built(&server("minimal.yaml"), &owned_credentials());
    assert!(desired.roles.is_empty() && desired.role_bindings.is_empty());
    assert!(!names(&desired.secrets).contains(&"llm-console-client-tls".to_string()));
    let clients = config_map_text(&desired, "llm-clients", "clients.json");
    assert!(!clients.contains("diloco-console"), "{clients}");
    assert_eq!(control_policy(&desired).as_array().unwrap().len(), 2);
}

/// `controlFrom` replaces every default peer, the console's too.
#[test]
fn control_from_overrides_the_console_peer() {
    let mut server = server("minimal.yaml");
    let peer: k8s_openapi::api::networking::v1::NetworkPolicyPeer = serde_json::from_value(
        serde_json::json!({"podSelector": {"matchLabels": {"role": "trainer"}}}),
    )
    .unwrap();
    server.spec.network_policy.control_from = Some(vec![peer]);
    let desired = built_with(&server, &console_settings(), &console_credentials());
    assert_eq!(
        control_policy(&desired),
        serde_json::json!([{"podSelector": {"matchLabels": {"role": "trainer"}}}])
    );
}

/// A certificate the operator does not issue cannot be handed to the console: with the
/// user's own TLS Secret (or none) there is no Role to read anything.
#[test]
fn without_operator_tls_the_console_gets_no_role() {
    let mut server = server("minimal.yaml");
    server.spec.tls.mode = diloco_crds::TlsMode::Secret;
    server.spec.tls.secret_name = Some("cert-manager-tls".into());
    let mut credentials = owned_credentials();
    credentials.tls = TlsSource::Referenced {
        secret: "cert-manager-tls".into(),
        ca_bundle: None,
        client_ca_secret: None,
    };
    let desired = built_with(&server, &console_settings(), &credentials);
    assert!(desired.roles.is_empty() && desired.role_bindings.is_empty());
}
