//! What every reconcile shares: the client, settings, metrics, the event recorder and the
//! per-object error backoff.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};

use diloco_crds::DiLoCoServer;

use crate::metrics::Metrics;
use crate::reconcile::status_refresh::StatusRefresher;
use crate::settings::{FIELD_MANAGER, Settings};

/// Shared state of the controller.
pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub metrics: Metrics,
    pub events: Events,
    /// Keeps the coordinator's round in status current between reconciles.
    pub status_refresh: StatusRefresher,
    backoff: Mutex<HashMap<(String, String), u32>>,
    /// Generation of each server (by uid) whose leftovers were last pruned by this process.
    pruned: Mutex<HashMap<String, i64>>,
}

impl Context {
    /// A context; `instance` names this operator replica in events.
    pub fn new(
        client: Client,
        settings: Settings,
        metrics: Metrics,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance,
        };
        Self {
            events: Events {
                recorder: Recorder::new(client.clone(), reporter),
            },
            client,
            settings,
            metrics,
            backoff: Mutex::new(HashMap::new()),
            pruned: Mutex::new(HashMap::new()),
            status_refresh: StatusRefresher::default(),
        }
    }

    /// The next retry delay for a failing object: doubling from 2 s up to `cap`.
    pub fn next_backoff(&self, server: &DiLoCoServer, cap: Duration) -> Duration {
        let key = (server.namespace().unwrap_or_default(), server.name_any());
        let mut failures = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        let count = failures.entry(key).or_insert(0);
        let delay = Duration::from_secs(2).saturating_mul(1 << (*count).min(16));
        *count = count.saturating_add(1);
        delay.min(cap)
    }

    /// Whether leftovers must be looked for: only a spec change (a new generation) can make a
    /// child undesired, and a fresh operator checks once per server.
    pub fn needs_prune(&self, server: &DiLoCoServer) -> bool {
        let pruned = self.pruned.lock().unwrap_or_else(|e| e.into_inner());
        pruned.get(&server.uid().unwrap_or_default()) != server.metadata.generation.as_ref()
    }

    /// Records that the server's leftovers were pruned at its current generation.
    pub fn mark_pruned(&self, server: &DiLoCoServer) {
        if let (Some(uid), Some(generation)) = (server.uid(), server.metadata.generation) {
            self.pruned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(uid, generation);
        }
    }

    /// Forgets an object's failures after it reconciled.
    pub fn reset_backoff(&self, server: &DiLoCoServer) {
        let key = (server.namespace().unwrap_or_default(), server.name_any());
        self.backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }
}

/// Kubernetes Events about a `DiLoCoServer`. Publishing never fails a reconcile.
pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// Publishes an event on `server`; a failure is logged.
    pub async fn publish(
        &self,
        server: &DiLoCoServer,
        type_: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &server.object_ref(&())).await {
            tracing::warn!(%error, reason, "could not publish an event");
        }
    }
}
