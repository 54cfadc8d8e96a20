//! Events for what a reconcile did to credentials: every token minted or rotated, every
//! certificate issued, every CA rolled over — never a token or a key in them.

use kube::ResourceExt;
use kube::runtime::events::EventType;

use diloco_crds::DiLoCoServer;

use crate::reconcile::build::{Credentials, TlsSource, TokenSource};
use crate::reconcile::certificates::{CertificateAction, LeafRole};
use crate::reconcile::context::Context;
use crate::reconcile::token::TokenAction;

pub async fn publish_credential_events(
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
        LeafRole::Console => "console client".into(),
        LeafRole::Client(name) => format!("client {name}"),
    }
}
