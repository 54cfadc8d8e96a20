//! Plan credentials: the bearer tokens (workers' and admin) and the PKI this reconcile settles
//! on — what exists is reused, what is missing or due is minted. Pure: the observed Secrets,
//! the annotations and the clock in, the plans out.

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::ResourceExt;

use diloco_contract::console::CONSOLE_COMMON_NAME;
use diloco_crds::{
    AuthMode, DiLoCoServer, ROTATE_CA_ANNOTATION, ROTATE_CERTIFICATES_ANNOTATION,
    ROTATE_TOKEN_ANNOTATION, TlsMode,
};

use crate::error::Result;
use crate::names::{ChildNames, OPERATOR_CLIENT_NAME};
use crate::pki::{LeafSubject, LeafUsage};
use crate::reconcile::build::{Credentials, TlsSource, TokenSource};
use crate::reconcile::certificates::{self, CA_CERT_KEY, LeafRole, PkiInputs};
use crate::reconcile::load::Observed;
use crate::reconcile::token::{self, TOKEN_KEY, random_token, secret_strings};
use crate::reconcile::validate::ValidatedSpec;
use crate::settings::Settings;

/// The token and certificates this reconcile settles on (minting what is missing or due).
pub fn plan_credentials(
    server: &DiLoCoServer,
    observed: &Observed,
    validated: &ValidatedSpec,
    settings: &Settings,
    now: Timestamp,
) -> Result<Credentials> {
    let spec = &server.spec;
    let names = ChildNames::new(&server.name_any());
    let annotations = server.annotations();
    let token = match (spec.auth.mode, &observed.token_secret_ref) {
        (AuthMode::None, _) => TokenSource::Disabled,
        (AuthMode::Token, Some(secret)) if spec.auth.token_secret_ref.is_some() => {
            TokenSource::Referenced {
                secret: secret.name_any(),
                token: secret_strings(secret)
                    .remove(TOKEN_KEY)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            }
        }
        (AuthMode::Token, _) => TokenSource::Owned(token::plan_token(
            observed.secret(&names.token_secret()),
            annotations.get(ROTATE_TOKEN_ANNOTATION).map(String::as_str),
            validated.grace,
            now,
            random_token,
        )?),
    };
    // The admin token is always the operator's, also when workers bring their own: a
    // user-supplied token is shared with every worker and must never grant control.
    let admin_token = match spec.auth.mode {
        AuthMode::None => None,
        AuthMode::Token => Some(token::plan_token(
            observed.secret(&names.admin_token_secret()),
            annotations.get(ROTATE_TOKEN_ANNOTATION).map(String::as_str),
            validated.grace,
            now,
            random_token,
        )?),
    };
    let tls = match spec.tls.mode {
        TlsMode::Disabled => TlsSource::Disabled,
        TlsMode::Secret => TlsSource::Referenced {
            secret: spec.tls.secret_name.clone().unwrap_or_default(),
            ca_bundle: observed
                .tls_secret_ref
                .as_ref()
                .and_then(|s| secret_strings(s).remove(CA_CERT_KEY)),
            client_ca_secret: spec
                .tls
                .client_ca_secret_ref
                .as_ref()
                .map(|r| r.name.clone()),
        },
        TlsMode::Operator => {
            let mut leaves = BTreeMap::new();
            let namespace = server.namespace().unwrap_or_default();
            leaves.insert(
                LeafRole::Server,
                (
                    server_subject(server, observed, settings, &namespace),
                    observed.secret(&names.server_tls_secret()),
                ),
            );
            leaves.insert(
                LeafRole::Operator,
                (
                    client_subject(OPERATOR_CLIENT_NAME),
                    observed.secret(&names.operator_tls_secret()),
                ),
            );
            if settings.console.is_some() {
                leaves.insert(
                    LeafRole::Console,
                    (
                        client_subject(CONSOLE_COMMON_NAME),
                        observed.secret(&names.console_tls_secret()),
                    ),
                );
            }
            for client in &spec.tls.clients {
                leaves.insert(
                    LeafRole::Client(client.name.clone()),
                    (
                        client_subject(&client.name),
                        observed.secret(&names.client_secret(&client.name)),
                    ),
                );
            }
            TlsSource::Owned(certificates::plan_pki(
                PkiInputs {
                    ca_secret: observed.secret(&names.ca_secret()),
                    leaves,
                    rotate_certificates_nonce: annotations
                        .get(ROTATE_CERTIFICATES_ANNOTATION)
                        .map(String::as_str),
                    rotate_ca_nonce: annotations.get(ROTATE_CA_ANNOTATION).map(String::as_str),
                    lifetimes: validated.lifetimes,
                    ca_common_name: format!("{}/{} DiLoCo CA", namespace, server.name_any()),
                },
                now,
            )?)
        }
    };
    Ok(Credentials {
        token,
        admin_token,
        tls,
    })
}

/// The coordinator's certificate names: both Services in every DNS form, the user's
/// `externalNames`, and the load-balancer addresses once assigned.
pub fn server_subject(
    server: &DiLoCoServer,
    observed: &Observed,
    settings: &Settings,
    namespace: &str,
) -> LeafSubject {
    let names = ChildNames::new(&server.name_any());
    let mut services = vec![names.control_service()];
    if server.spec.bulk.enabled {
        services.push(names.bulk_service());
    }
    let mut dns = Vec::new();
    for service in &services {
        dns.push(service.clone());
        dns.push(format!("{service}.{namespace}"));
        dns.push(format!("{service}.{namespace}.svc"));
        dns.push(format!(
            "{service}.{namespace}.svc.{}",
            settings.cluster_domain
        ));
    }
    dns.extend(server.spec.control.external_names.iter().cloned());
    for service in [&observed.control_service, &observed.bulk_service]
        .into_iter()
        .flatten()
    {
        let ingress = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for entry in ingress.into_iter().flatten() {
            dns.extend(entry.ip.iter().cloned());
            dns.extend(entry.hostname.iter().cloned());
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    dns.retain(|name| seen.insert(name.clone()));
    LeafSubject {
        common_name: format!("{}.{namespace}.svc", names.control_service()),
        names: dns,
        usage: LeafUsage::Server,
    }
}

fn client_subject(name: &str) -> LeafSubject {
    LeafSubject {
        common_name: name.to_string(),
        names: Vec::new(),
        usage: LeafUsage::Client,
    }
}

/// When credentials next need the operator: a renewal, or the end of a grace period.
pub fn next_credential_change(credentials: &Credentials) -> Vec<Timestamp> {
    let mut times = Vec::new();
    if let TokenSource::Owned(plan) = &credentials.token {
        times.extend(plan.previous_valid_until);
    }
    if let Some(plan) = &credentials.admin_token {
        times.extend(plan.previous_valid_until);
    }
    if let TlsSource::Owned(pki) = &credentials.tls {
        times.push(pki.next_change);
    }
    times
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use diloco_crds::DiLoCoServer;
    use jiff::Timestamp;

    use super::*;
    use crate::reconcile::build::TlsSource;
    use crate::reconcile::load::Observed;
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

    /// The credentials step issues the console a client certificate with common name
    /// `diloco-console`, signed by the server's CA, only when a console is configured.
    #[test]
    fn the_console_certificate_is_planned_only_with_a_console() {
        let server: DiLoCoServer = serde_norway::from_str(
            &std::fs::read_to_string(
                std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("src/reconcile/build/fixtures/minimal.yaml"),
            )
            .unwrap(),
        )
        .unwrap();
        let observed = Observed::default();
        let validated = crate::reconcile::validate::validate(&server, &observed).unwrap();
        let now: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let plan = |settings: &Settings| match plan_credentials(
            &server, &observed, &validated, settings, now,
        )
        .unwrap()
        .tls
        {
            TlsSource::Owned(pki) => pki,
            other => panic!("operator TLS expected, got {other:?}"),
        };
        let without = plan(&Settings::default());
        assert!(!without.leaves.contains_key(&LeafRole::Console));
        let with = plan(&console_settings());
        let leaf = &with.leaves[&LeafRole::Console];
        let der = x509_parser::pem::parse_x509_pem(leaf.keyed.cert_pem.as_bytes())
            .unwrap()
            .1;
        let cert = der.parse_x509().unwrap();
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(common_name, diloco_contract::console::CONSOLE_COMMON_NAME);
        assert!(with.actions.iter().any(|a| matches!(
            a,
            crate::reconcile::certificates::CertificateAction::LeafIssued {
                role: LeafRole::Console,
                ..
            }
        )));
    }
}
