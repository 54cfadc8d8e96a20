//! Prometheus metrics, served at `/metrics` in the text exposition format.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every metric the coordinator exports.
pub struct Metrics {
    registry: Registry,
    /// Outer steps completed (θ's version).
    pub round: Gauge,
    /// Workers registered.
    pub registered_workers: Gauge,
    /// Outer steps run.
    pub outer_steps: Counter,
    /// Wall time of outer steps.
    pub outer_step_seconds: Histogram,
    /// Wall time of folding one upload into the accumulator.
    pub fold_seconds: Histogram,
    /// Bytes of tensor data folded.
    pub upload_bytes: Counter,
    /// Uploads refused, by reason (`kind` of the error).
    pub rejected_uploads: Family<Vec<(String, String)>, Counter>,
    /// Workers evicted for missing heartbeats.
    pub evictions: Counter,
    /// Checkpoints written.
    pub checkpoints_saved: Counter,
    /// Checkpoints that failed to write.
    pub checkpoint_failures: Counter,
    /// Requests refused for a missing, malformed or wrong credential.
    pub auth_failures: Counter,
    /// Requests refused with 429 because their address failed too often (not compared).
    pub auth_rate_limited: Counter,
    /// Requests refused with 403: authenticated, but not allowed to do that.
    pub forbidden: Counter,
    /// Audit records that could not be written.
    pub audit_write_failures: Counter,
    /// Audit records dropped because the writer's queue was full.
    pub audit_records_dropped: Counter,
    /// Requests that brought a bearer token to the cleartext bulk plane.
    pub cleartext_bearer: Counter,
    /// Credential files re-read after a change, by credential and outcome.
    pub credential_reloads: Family<Vec<(String, String)>, Counter>,
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("diloco");
        let seconds = || Histogram::new(exponential_buckets(0.001, 2.0, 18));
        let metrics = Self {
            round: Gauge::default(),
            registered_workers: Gauge::default(),
            outer_steps: Counter::default(),
            outer_step_seconds: seconds(),
            fold_seconds: seconds(),
            upload_bytes: Counter::default(),
            rejected_uploads: Family::default(),
            evictions: Counter::default(),
            checkpoints_saved: Counter::default(),
            checkpoint_failures: Counter::default(),
            auth_failures: Counter::default(),
            auth_rate_limited: Counter::default(),
            forbidden: Counter::default(),
            audit_write_failures: Counter::default(),
            audit_records_dropped: Counter::default(),
            cleartext_bearer: Counter::default(),
            credential_reloads: Family::default(),
            registry: Registry::default(),
        };
        registry.register("round", "Outer steps completed", metrics.round.clone());
        registry.register(
            "registered_workers",
            "Workers registered",
            metrics.registered_workers.clone(),
        );
        registry.register(
            "outer_steps",
            "Outer steps run",
            metrics.outer_steps.clone(),
        );
        registry.register(
            "outer_step_seconds",
            "Wall time of an outer step",
            metrics.outer_step_seconds.clone(),
        );
        registry.register(
            "fold_seconds",
            "Wall time of folding one upload",
            metrics.fold_seconds.clone(),
        );
        registry.register(
            "upload_bytes",
            "Bytes of tensor data folded",
            metrics.upload_bytes.clone(),
        );
        registry.register(
            "rejected_uploads",
            "Uploads refused, by reason",
            metrics.rejected_uploads.clone(),
        );
        registry.register(
            "worker_evictions",
            "Workers evicted for missing heartbeats",
            metrics.evictions.clone(),
        );
        registry.register(
            "checkpoints_saved",
            "Checkpoints written",
            metrics.checkpoints_saved.clone(),
        );
        registry.register(
            "checkpoint_failures",
            "Checkpoints that failed",
            metrics.checkpoint_failures.clone(),
        );
        registry.register(
            "auth_failures",
            "Requests refused for a missing, malformed or wrong credential",
            metrics.auth_failures.clone(),
        );
        registry.register(
            "auth_rate_limited",
            "Requests refused with 429 after too many failed authentications from their address",
            metrics.auth_rate_limited.clone(),
        );
        registry.register(
            "forbidden",
            "Authenticated requests refused with 403 (role or worker ownership)",
            metrics.forbidden.clone(),
        );
        registry.register(
            "audit_records_dropped",
            "Audit records dropped because the audit writer's queue was full",
            metrics.audit_records_dropped.clone(),
        );
        registry.register(
            "audit_write_failures",
            "Audit records that could not be written",
            metrics.audit_write_failures.clone(),
        );
        registry.register(
            "bulk_cleartext_bearer",
            "Requests that brought a bearer token to the cleartext bulk plane",
            metrics.cleartext_bearer.clone(),
        );
        registry.register(
            "credential_reloads",
            "Credentials re-read from their files after a change, by credential and outcome \
             (reloaded, or failed: the old one stays in force)",
            metrics.credential_reloads.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts a refused upload.
    pub fn reject(&self, kind: &str) {
        self.rejected_uploads
            .get_or_create(&vec![("reason".to_string(), kind.to_string())])
            .inc();
    }

    /// Counts a credential reload (`outcome`: `reloaded` or `failed`).
    pub fn credential_reload(&self, credential: &str, outcome: &str) {
        self.credential_reloads
            .get_or_create(&vec![
                ("credential".to_string(), credential.to_string()),
                ("outcome".to_string(), outcome.to_string()),
            ])
            .inc();
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
