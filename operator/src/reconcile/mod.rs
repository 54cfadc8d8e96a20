//! The reconcile pipeline for one `DiLoCoServer`: load → references (what the spec may
//! reach) → validate → credentials (tokens and PKI) → build → ownership (no child name taken
//! by someone else) → apply → status. Each step has its own module; this one only strings
//! them together and publishes events for credential actions.

pub mod apply;
pub mod build;
pub mod certificates;
pub mod coordinator_probe;
pub mod load;
pub mod ownership;
pub mod references;
pub mod status;
pub mod token;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use diloco_crds::{
    AuthMode, DiLoCoServer, ROTATE_CA_ANNOTATION, ROTATE_CERTIFICATES_ANNOTATION,
    ROTATE_TOKEN_ANNOTATION, TlsMode,
};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::names::ChildNames;
use crate::pki::{LeafSubject, LeafUsage};
use crate::reconcile::build::{BuildContext, Credentials, TlsSource, TokenSource};
use crate::reconcile::certificates::{CA_CERT_KEY, CertificateAction, LeafRole, PkiInputs};
use crate::reconcile::load::Observed;
use crate::reconcile::status::{CoordinatorProbe, Outcome};
use crate::reconcile::token::{TOKEN_KEY, TokenAction, random_token, secret_strings};
use crate::settings::Settings;

/// A healthy server is looked at again this often even if nothing changes (drift, a
/// referenced Secret edited); its round in status is kept current by
/// [`crate::status_refresh`] in between.
const RESYNC: Duration = Duration::from_secs(300);
/// While the coordinator is not available yet, status is refreshed this often.
const NOT_READY_RESYNC: Duration = Duration::from_secs(15);
/// Common name of the operator's own client certificate.
pub const OPERATOR_CLIENT_NAME: &str = "diloco-operator";

/// Reconciles one server.
pub async fn reconcile(server: Arc<DiLoCoServer>, ctx: Arc<Context>) -> Result<Action> {
    let started = std::time::Instant::now();
    let result = run_pipeline(&server, &ctx).await;
    ctx.metrics
        .observe_reconcile(started.elapsed(), result.as_ref().err());
    result
}

async fn run_pipeline(server: &DiLoCoServer, ctx: &Context) -> Result<Action> {
    let namespace = server.namespace().unwrap_or_default();
    let now = Timestamp::now();
    if server.metadata.deletion_timestamp.is_some() {
        // Children go with the garbage collector (owner references); nothing to do.
        ctx.status_refresh.forget(server);
        return Ok(Action::await_change());
    }
    if server.spec.paused {
        ctx.status_refresh.forget(server);
        status::write_status(&ctx.client, server, status::paused_status(server, now)).await?;
        return Ok(Action::await_change());
    }
    let mut observed = load::load(&ctx.client, server).await?;
    let reachable = references::check(server, &observed.references, &ctx.settings.allowed_images)
        .and_then(|()| name_conflict(&observed.conflicts));
    if let Err(invalid) = reachable {
        return refuse(ctx, server, invalid, now).await;
    }
    load::load_referenced_secrets(&ctx.client, server, &mut observed).await?;
    let validated = match validate::validate(server, &observed) {
        Ok(validated) => validated,
        Err(invalid) => return refuse(ctx, server, invalid, now).await,
    };

    let credentials = settle_credentials(server, &observed, &validated, &ctx.settings, now)?;
    let build_ctx = BuildContext::new(server, &ctx.settings)?;
    let desired = build::build(&build_ctx, &credentials)?;
    let taken =
        ownership::foreign_children(&ctx.client, server, &desired, &observed.verified_children)
            .await?;
    if let Err(invalid) = name_conflict(&taken) {
        return refuse(ctx, server, invalid, now).await;
    }
    let names = ChildNames::new(&server.name_any());
    let prune = ctx.needs_prune(server);
    let applied = apply::apply(
        &ctx.client,
        &namespace,
        &names.children_selector(),
        &server.uid().unwrap_or_default(),
        &desired,
        prune,
    )
    .await?;
    if prune {
        ctx.mark_pruned(server);
    }
    publish_credential_events(ctx, server, &credentials).await;
    for deleted in &applied.deleted {
        tracing::info!(server = %server.name_any(), %namespace, child = %deleted, "deleted a child that is no longer desired");
    }

    let deployment_uid = applied
        .deployment
        .as_ref()
        .and_then(|d| d.metadata.uid.clone())
        .unwrap_or_default();
    let available = applied
        .deployment
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
        >= 1;
    let coordinator = if available {
        coordinator_probe::probe(
            &ctx.client,
            server,
            &credentials,
            &namespace,
            &deployment_uid,
        )
        .await
    } else {
        CoordinatorProbe::NotAsked
    };
    let reported = match &coordinator {
        CoordinatorProbe::Reported(status) => Some(status.clone()),
        _ => None,
    };
    let outcome = Outcome {
        credentials: &credentials,
        applied: &applied,
        endpoints: build::endpoints(&build_ctx, credentials.tls.enabled()),
        network_policies: server.spec.network_policy.enabled,
        coordinator,
    };
    let new_status = status::reconciled_status(server, &outcome, now);
    let ready = new_status.phase.as_deref() == Some("Ready");
    status::write_status(&ctx.client, server, new_status).await?;
    match reported {
        Some(reported) if ready => {
            ctx.status_refresh
                .track(server, &credentials, &deployment_uid, reported)
        }
        _ => ctx.status_refresh.forget(server),
    }

    let mut next = if ready { RESYNC } else { NOT_READY_RESYNC };
    for change in next_credential_change(&credentials) {
        let until = change.duration_since(now);
        let until = Duration::try_from(until).unwrap_or(Duration::ZERO) + Duration::from_secs(1);
        next = next.min(until);
    }
    Ok(Action::requeue(next))
}

/// Reports `invalid` (a Warning event and a `Ready=False` condition with its reason) and
/// ends the reconcile; nothing is applied.
async fn refuse(
    ctx: &Context,
    server: &DiLoCoServer,
    invalid: validate::Invalid,
    now: Timestamp,
) -> Result<Action> {
    ctx.status_refresh.forget(server);
    ctx.events
        .publish(
            server,
            EventType::Warning,
            invalid.reason,
            "Validate",
            &invalid.message,
        )
        .await;
    status::write_status(
        &ctx.client,
        server,
        status::invalid_status(server, &invalid, now),
    )
    .await?;
    Err(if invalid.fixed_elsewhere {
        Error::Refused(invalid.message)
    } else {
        Error::InvalidSpec(invalid.message)
    })
}

/// `NameConflict` when some child's name is taken by an object that is not this server's.
fn name_conflict(conflicts: &[ownership::Conflict]) -> Result<(), validate::Invalid> {
    if conflicts.is_empty() {
        return Ok(());
    }
    let list = conflicts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    Err(validate::Invalid::other(
        "NameConflict",
        format!(
            "children of this server would take names that already belong to someone else: \
             {list}; the operator neither reads nor overwrites them. Rename this DiLoCoServer \
             (or its tls.clients entry) so its children `<name>-<role>` are free"
        ),
    ))
}

/// The token and certificates this reconcile settles on (minting what is missing or due).
pub fn settle_credentials(
    server: &DiLoCoServer,
    observed: &Observed,
    validated: &validate::ValidatedSpec,
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
fn next_credential_change(credentials: &Credentials) -> Vec<Timestamp> {
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

async fn publish_credential_events(
    ctx: &Context,
    server: &DiLoCoServer,
    credentials: &Credentials,
) {
    let tokens = [
        match &credentials.token {
            TokenSource::Owned(plan) => Some((plan, "bearer token", "Token")),
            _ => None,
        },
        credentials
            .admin_token
            .as_ref()
            .map(|plan| (plan, "admin bearer token", "AdminToken")),
    ];
    for (plan, what, kind) in tokens.into_iter().flatten() {
        let note = match plan.action {
            Some(TokenAction::Created) => Some(("Created", format!("minted the {what}"))),
            Some(TokenAction::Rotated) => Some((
                "Rotated",
                format!(
                    "rotated the {what}; the previous one is accepted until {}",
                    plan.previous_valid_until
                        .map(|t| t.to_string())
                        .unwrap_or_default()
                ),
            )),
            Some(TokenAction::PreviousExpired) => Some((
                "PreviousExpired",
                format!("the grace period ended; the previous {what} was removed"),
            )),
            None => None,
        };
        if let Some((action, message)) = note {
            let reason = match action {
                "PreviousExpired" => format!("Previous{kind}Expired"),
                _ => format!("{kind}{action}"),
            };
            tracing::info!(server = %server.name_any(), reason, "{message}");
            ctx.events
                .publish(server, EventType::Normal, &reason, "Credentials", &message)
                .await;
        }
    }
    if let TlsSource::Owned(pki) = &credentials.tls {
        for action in &pki.actions {
            let (reason, message) = match action {
                CertificateAction::CaCreated => {
                    ("CertificateAuthorityCreated", "created the CA".to_string())
                }
                CertificateAction::CaRotated => (
                    "CertificateAuthorityRotated",
                    "rolled over to a new CA; the previous one stays trusted for the grace period"
                        .to_string(),
                ),
                CertificateAction::CaPreviousExpired => (
                    "PreviousCertificateAuthorityExpired",
                    "removed the previous CA from the trust bundle".to_string(),
                ),
                CertificateAction::LeafIssued { role, reason } => (
                    "CertificateIssued",
                    format!("issued the {} certificate ({reason})", describe_role(role)),
                ),
            };
            tracing::info!(server = %server.name_any(), reason, "{message}");
            ctx.events
                .publish(server, EventType::Normal, reason, "Credentials", &message)
                .await;
        }
    }
}

fn describe_role(role: &LeafRole) -> String {
    match role {
        LeafRole::Server => "server".into(),
        LeafRole::Operator => "operator client".into(),
        LeafRole::Client(name) => format!("client {name}"),
    }
}
