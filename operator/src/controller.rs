//! The controller: watches `DiLoCoServer`s (all namespaces, or a list of them) and the
//! children the operator labels, and runs [`crate::reconcile::reconcile`] for each change, with
//! a per-object exponential backoff on errors.

use std::collections::BTreeSet;
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

use crate::error::Error;
use crate::names::MANAGED_BY;
use crate::reconcile::context::Context;

/// Bursts of child events (the controller-manager updating a new Deployment's status several
/// times, a reconcile's own writes) are folded into one reconcile.
const DEBOUNCE: Duration = Duration::from_millis(500);
/// Longest wait before retrying a server whose spec is invalid (a spec edit retries at once).
const INVALID_SPEC_BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Longest wait before retrying after any other error (a missing Secret, an API error).
const ERROR_BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Which namespaces the operator reconciles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchScope {
    /// Every namespace: needs cluster-wide list and watch rights (a ClusterRole).
    AllNamespaces,
    /// Only these (at least one; sorted, without duplicates): needs rights in each of them
    /// and nowhere else (one Role per namespace).
    Namespaces(BTreeSet<String>),
}

impl WatchScope {
    /// The scope for the `--watch-namespace` values: no namespace (or only empty ones) means
    /// every namespace.
    pub fn from_namespaces<I, S>(namespaces: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let namespaces: BTreeSet<String> = namespaces
            .into_iter()
            .map(|n| n.as_ref().trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        if namespaces.is_empty() {
            Self::AllNamespaces
        } else {
            Self::Namespaces(namespaces)
        }
    }

    /// One entry per watch: `None` is every namespace.
    fn watches(&self) -> Vec<Option<&str>> {
        match self {
            Self::AllNamespaces => vec![None],
            Self::Namespaces(namespaces) => namespaces.iter().map(|n| Some(n.as_str())).collect(),
        }
    }
}

impl std::fmt::Display for WatchScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AllNamespaces => f.write_str("<all>"),
            Self::Namespaces(namespaces) => {
                let list: Vec<&str> = namespaces.iter().map(String::as_str).collect();
                f.write_str(&list.join(","))
            }
        }
    }
}

/// Fails with a clear message when the CRD is not installed or RBAC forbids listing
/// DiLoCoServers in a namespace of `scope`: what `/readyz` stands for, leader or standby.
pub async fn check_access(client: &Client, scope: &WatchScope) -> anyhow::Result<()> {
    for namespace in scope.watches() {
        let servers: Api<DiLoCoServer> = scoped(client, namespace);
        servers
            .list(&ListParams::default().limit(1))
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot list DiLoCoServers in {} (is the CRD installed? `diloco-operator \
                     crd | kubectl apply -f -`; does the operator's Role cover that namespace?): \
                     {e}",
                    namespace.unwrap_or("every namespace")
                )
            })?;
    }
    Ok(())
}

/// Runs the controller until SIGTERM/SIGINT, over the namespaces of `scope`.
///
/// A list of namespaces gets one [`Controller`] per namespace, all sharing `ctx` (settings,
/// backoff, the status refresher), rather than one controller over merged per-namespace
/// watch streams: a controller's cache is one reflector store, and a store fed by several
/// watchers is wiped by each watcher's re-list (a re-list replaces the whole store), so
/// servers of the other namespaces would vanish from it until their next event. Objects of
/// different namespaces never share a reconcile queue entry, so separate queues lose nothing.
pub async fn run(ctx: Arc<Context>, scope: WatchScope) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    check_access(&client, &scope).await?;
    ctx.metrics.set_ready();
    tracing::info!(namespaces = %scope, "controller started");
    let refresher = ctx.clone();
    let refresh_status =
        async move { refresher.status_refresh.run(refresher.client.clone()).await };
    let controllers = futures_util::future::join_all(
        scope
            .watches()
            .into_iter()
            .map(|namespace| run_one(&client, namespace, ctx.clone())),
    );
    // The refresher polls forever; it stops with the controllers (shutdown or lost lease).
    // Every controller reacts to the same signal, so they stop together.
    tokio::select! {
        _ = controllers => {}
        () = refresh_status => {}
    }
    tracing::info!("controller stopped");
    Ok(())
}

/// The controller of one namespace (`None`: every namespace), until SIGTERM/SIGINT.
fn run_one(
    client: &Client,
    namespace: Option<&str>,
    ctx: Arc<Context>,
) -> impl std::future::Future<Output = ()> + use<> {
    let children =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    Controller::new(
        scoped::<DiLoCoServer>(client, namespace),
        watcher::Config::default().any_semantic(),
    )
    .with_config(controller::Config::default().debounce(DEBOUNCE))
    .owns(scoped::<Secret>(client, namespace), children.clone())
    .owns(scoped::<ConfigMap>(client, namespace), children.clone())
    .owns(scoped::<Service>(client, namespace), children.clone())
    .owns(scoped::<NetworkPolicy>(client, namespace), children.clone())
    .owns(scoped::<Deployment>(client, namespace), children)
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
    })
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
            if !matches!(error, Error::InvalidSpec(_) | Error::Refused(_)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_watch_namespace_means_every_namespace() {
        assert_eq!(
            WatchScope::from_namespaces(Vec::<String>::new()),
            WatchScope::AllNamespaces
        );
        assert_eq!(
            WatchScope::from_namespaces(["", " "]),
            WatchScope::AllNamespaces
        );
    }

    #[test]
    fn watch_namespaces_are_trimmed_and_deduplicated() {
        let scope = WatchScope::from_namespaces(["team-b", " team-a", "team-b", ""]);
        assert_eq!(
            scope,
            WatchScope::Namespaces(BTreeSet::from(["team-a".into(), "team-b".into()]))
        );
        assert_eq!(scope.watches(), [Some("team-a"), Some("team-b")]);
        assert_eq!(scope.to_string(), "team-a,team-b");
    }
}
