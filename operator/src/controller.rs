//! The controller: watches `DiLoCoServer`s (all namespaces, or one) and the children the
//! operator labels, and runs [`crate::reconcile::reconcile`] for each change, with a
//! per-object exponential backoff on errors.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use diloco_crds::DiLoCoServer;

use crate::context::Context;
use crate::error::Error;
use crate::names::MANAGED_BY;

/// Bursts of child events (the controller-manager updating a new Deployment's status several
/// times, a reconcile's own writes) are folded into one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(500);
/// Longest wait before retrying a server whose spec is invalid (a spec edit retries at once).
const INVALID_SPEC_BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Longest wait before retrying after any other error (a missing Secret, an API error).
const ERROR_BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Runs the controller until SIGTERM/SIGINT. `namespace` limits it to one namespace.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let servers: Api<DiLoCoServer> = scoped(&client, namespace.as_deref());
    // Fail early with a clear message when the CRD is not installed or RBAC forbids it.
    servers
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot list DiLoCoServers (is the CRD installed? `diloco-operator crd | kubectl \
             apply -f -`): {e}"
            )
        })?;
    ctx.metrics.set_ready();
    let children =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    tracing::info!(
        namespace = namespace.as_deref().unwrap_or("<all>"),
        "controller started"
    );
    let refresher = ctx.clone();
    let refresh_status =
        async move { refresher.status_refresh.run(refresher.client.clone()).await };
    let controller = Controller::new(servers, watcher::Config::default().any_semantic())
        .with_config(controller::Config::default().debounce(DEBOUNCE))
        .owns(
            scoped::<Secret>(&client, namespace.as_deref()),
            children.clone(),
        )
        .owns(
            scoped::<ConfigMap>(&client, namespace.as_deref()),
            children.clone(),
        )
        .owns(
            scoped::<Service>(&client, namespace.as_deref()),
            children.clone(),
        )
        .owns(
            scoped::<NetworkPolicy>(&client, namespace.as_deref()),
            children.clone(),
        )
        .owns(
            scoped::<Deployment>(&client, namespace.as_deref()),
            children,
        )
        .shutdown_on_signal()
        .run(reconcile_and_reset, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                Err(kube::runtime::controller::Error::ReconcilerFailed(error, object)) => {
                    tracing::warn!(%object, %error, "reconcile failed");
                }
                Err(error) => tracing::warn!(%error, "controller error"),
            }
        });
    // The refresher polls forever; it stops with the controller (shutdown or lost lease).
    tokio::select! {
        () = controller => {}
        () = refresh_status => {}
    }
    tracing::info!("controller stopped");
    Ok(())
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

async fn reconcile_and_reset(
    server: Arc<DiLoCoServer>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    match crate::reconcile::reconcile(server.clone(), ctx.clone()).await {
        Ok(action) => {
            ctx.reset_backoff(&server);
            Ok(action)
        }
        Err(error) => {
            // Spec and reference problems already got their own Warning with a reason.
            if !matches!(error, Error::InvalidSpec(_) | Error::MissingSecret(_)) {
                ctx.events
                    .publish(
                        &server,
                        EventType::Warning,
                        "ReconcileFailed",
                        "Reconcile",
                        &error.to_string(),
                    )
                    .await;
            }
            Err(error)
        }
    }
}

fn error_policy(server: Arc<DiLoCoServer>, error: &Error, ctx: Arc<Context>) -> Action {
    let cap = match error {
        Error::InvalidSpec(_) => INVALID_SPEC_BACKOFF_CAP,
        _ => ERROR_BACKOFF_CAP,
    };
    Action::requeue(ctx.next_backoff(&server, cap))
}
