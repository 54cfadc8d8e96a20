//! The reconcile pipeline for one `DiLoCoServer`: load → references (what the spec may
//! reach) → validate → credentials (tokens and PKI) → build → ownership (no child name taken
//! by someone else) → apply → status. Each step has its own module; this one only strings
//! them together and publishes events for credential actions.

pub mod apply;
pub mod build;
pub mod certificates;
pub mod coordinator_probe;
pub mod credential_events;
pub mod credentials;
pub mod load;
pub mod ownership;
pub mod references;
pub mod status;
pub mod token;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use diloco_crds::DiLoCoServer;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::names::ChildNames;
use crate::reconcile::build::BuildContext;
use crate::reconcile::status::{CoordinatorProbe, Outcome};

/// A healthy server is looked at again this often even if nothing changes (drift, a
/// referenced Secret edited); its round in status is kept current by
/// [`crate::status_refresh`] in between.
const RESYNC: Duration = Duration::from_secs(300);
/// While the coordinator is not available yet, status is refreshed this often.
const NOT_READY_RESYNC: Duration = Duration::from_secs(15);

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
        .and_then(|()| ownership::refuse_taken_names(&observed.conflicts));
    if let Err(invalid) = reachable {
        return refuse(ctx, server, invalid, now).await;
    }
    load::load_referenced_secrets(&ctx.client, server, &mut observed).await?;
    let validated = match validate::validate(server, &observed) {
        Ok(validated) => validated,
        Err(invalid) => return refuse(ctx, server, invalid, now).await,
    };

    let credentials =
        credentials::plan_credentials(server, &observed, &validated, &ctx.settings, now)?;
    let build_ctx = BuildContext::new(server, &ctx.settings)?;
    let desired = build::build(&build_ctx, &credentials)?;
    let taken =
        ownership::foreign_children(&ctx.client, server, &desired, &observed.verified_children)
            .await?;
    if let Err(invalid) = ownership::refuse_taken_names(&taken) {
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
    credential_events::publish_credential_events(ctx, server, &credentials).await;
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
    let ready = new_status.phase == Some(diloco_crds::Phase::Ready);
    status::write_status(&ctx.client, server, new_status).await?;
    match reported {
        Some(reported) if ready => {
            ctx.status_refresh
                .track(server, &credentials, &deployment_uid, reported)
        }
        _ => ctx.status_refresh.forget(server),
    }

    let mut next = if ready { RESYNC } else { NOT_READY_RESYNC };
    for change in credentials::next_credential_change(&credentials) {
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
