//! Keeps `status.coordinator` (the ROUND and WORKERS columns of `kubectl get dls`) current
//! between reconciles. A reconcile re-applies every child, so an idle server is reconciled
//! only every few minutes; instead, every [`REFRESH_PERIOD`] this asks each ready server's
//! coordinator for its `/status` (the same mTLS probe the reconcile uses, at the pod IP found
//! once per reconcile) and patches only `status.coordinator`, and only when the round or the
//! worker count moved. An idle fleet costs the API server nothing between reconciles.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use diloco_crds::{CoordinatorStatus, DiLoCoServer};

use crate::names::ChildNames;
use crate::reconcile::build::Credentials;
use crate::reconcile::coordinator_probe;
use crate::reconcile::status::CoordinatorProbe;
use crate::settings::FIELD_MANAGER;

/// How often each ready server's coordinator is asked for its round.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(15);

/// A ready server and what it last reported.
struct Target {
    server: Arc<DiLoCoServer>,
    credentials: Credentials,
    /// The uid of the coordinator Deployment whose pods may be polled.
    deployment_uid: String,
    /// The coordinator pod's IP, looked up on the first poll after each reconcile.
    address: Option<IpAddr>,
    reported: Option<CoordinatorStatus>,
}

/// The servers whose coordinators are polled, keyed by namespace and name.
#[derive(Default)]
pub struct StatusRefresher {
    targets: Mutex<BTreeMap<(String, String), Target>>,
}

impl StatusRefresher {
    /// Polls `server`'s coordinator from now on; `reported` is what status already shows.
    pub fn track(
        &self,
        server: &DiLoCoServer,
        credentials: &Credentials,
        deployment_uid: &str,
        reported: CoordinatorStatus,
    ) {
        let target = Target {
            server: Arc::new(server.clone()),
            credentials: credentials.clone(),
            deployment_uid: deployment_uid.to_string(),
            address: None,
            reported: Some(reported),
        };
        self.lock().insert(key(server), target);
    }

    /// Stops polling `server` (it is not ready, paused or being deleted).
    pub fn forget(&self, server: &DiLoCoServer) {
        self.lock().remove(&key(server));
    }

    /// Polls every tracked server every [`REFRESH_PERIOD`], forever.
    pub async fn run(&self, client: Client) {
        let mut tick = tokio::time::interval(REFRESH_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.refresh_once(&client).await;
        }
    }

    /// One pass over the tracked servers.
    async fn refresh_once(&self, client: &Client) {
        let snapshot: Vec<_> = self
            .lock()
            .iter()
            .map(|(key, t)| {
                (
                    key.clone(),
                    t.server.clone(),
                    (t.credentials.clone(), t.deployment_uid.clone()),
                    t.address,
                )
            })
            .collect();
        for (key, server, (credentials, deployment_uid), address) in snapshot {
            let polled = poll(
                client,
                &key,
                &server,
                &credentials,
                &deployment_uid,
                address,
            )
            .await;
            let Some((address, status)) = polled else {
                // Not answering (restarting, deleted): the reconcile that the pod's or the
                // server's own change triggers reports why, and tracks it again once ready.
                self.lock().remove(&key);
                continue;
            };
            let changed = match self.lock().get_mut(&key) {
                Some(target) => {
                    target.address = Some(address);
                    target.reported.as_ref() != Some(&status)
                }
                None => false,
            };
            if changed
                && write_coordinator_status(client, &key, &status).await
                && let Some(target) = self.lock().get_mut(&key)
            {
                target.reported = Some(status);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Target>> {
        // A panic while holding this lock cannot leave the map half-updated (single inserts
        // and removes), so a poisoned lock is still usable.
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn key(server: &DiLoCoServer) -> (String, String) {
    (server.namespace().unwrap_or_default(), server.name_any())
}

/// Asks the coordinator for its status, finding the pod's IP first if it is not known yet.
async fn poll(
    client: &Client,
    (namespace, name): &(String, String),
    server: &DiLoCoServer,
    credentials: &Credentials,
    deployment_uid: &str,
    address: Option<IpAddr>,
) -> Option<(IpAddr, CoordinatorStatus)> {
    let address = match address {
        Some(address) => address,
        None => coordinator_probe::ready_address(
            client,
            namespace,
            &ChildNames::new(name),
            deployment_uid,
        )
        .await
        .ok()?,
    };
    match coordinator_probe::probe_at(server, credentials, namespace, address).await {
        CoordinatorProbe::Reported(status) => Some((address, status)),
        _ => None,
    }
}

/// Merge-patches `status.coordinator` alone; returns whether it was written.
async fn write_coordinator_status(
    client: &Client,
    (namespace, name): &(String, String),
    status: &CoordinatorStatus,
) -> bool {
    let api: Api<DiLoCoServer> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    let patch = json!({"status": {"coordinator": status}});
    match api.patch_status(name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => true,
        Err(error) => {
            tracing::debug!(server = %name, %namespace, %error, "could not refresh the coordinator status");
            false
        }
    }
}
