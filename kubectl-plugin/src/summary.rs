//! A `DiLoCoServer` as the console and `status` show it ([`ServerSummary`], built from the
//! resource's status), and the tables `status` prints. Pure: the resource (and the clock) in,
//! text out.

use diloco_contract::api::StatusReply;
use diloco_contract::console::{ConditionSummary, ServerSummary};
use diloco_crds::DiLoCoServer;
use jiff::Timestamp;
use kube::ResourceExt;

use crate::table::{Table, age, or_none, timestamp_with_distance};

/// The summary of `server` from its status (what the operator last observed).
pub fn summarize(server: &DiLoCoServer) -> ServerSummary {
    let status = server.status.clone().unwrap_or_default();
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    ServerSummary {
        namespace: server.namespace().unwrap_or_default(),
        name: server.name_any(),
        phase: status.phase.as_ref().and_then(|phase| {
            // The CRD's spelling of the phase, not Rust's.
            serde_json::to_value(phase)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
        }),
        round: status
            .coordinator
            .as_ref()
            .and_then(|c| u64::try_from(c.round).ok()),
        workers: status
            .coordinator
            .as_ref()
            .and_then(|c| u64::try_from(c.workers).ok()),
        endpoint: status.endpoints.as_ref().and_then(|e| e.control.clone()),
        created: server
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string()),
        conditions: status
            .conditions
            .iter()
            .map(|c| ConditionSummary {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: non_empty(&c.reason),
                message: non_empty(&c.message),
            })
            .collect(),
        token_rotated_at: status.token_rotation.and_then(|t| t.rotated_at),
        certificate_expires_at: status.certificates.and_then(|c| c.not_after),
    }
}

/// The live numbers replace the operator's last poll: the coordinator's round and registered
/// workers now.
pub fn with_live(mut summary: ServerSummary, live: &StatusReply) -> ServerSummary {
    summary.round = Some(live.sync_round);
    summary.workers = u64::try_from(live.num_registered).ok();
    summary
}

/// The server, its conditions and its credential state, as three tables.
pub fn render_summary(summary: &ServerSummary, now: Timestamp) -> String {
    let mut server = Table::new(["name", "phase", "round", "workers", "endpoint", "age"]);
    server.row([
        summary.name.clone(),
        or_none(summary.phase.as_deref()),
        or_none(summary.round),
        or_none(summary.workers),
        or_none(summary.endpoint.as_deref()),
        or_none(
            summary
                .created
                .as_deref()
                .and_then(|c| c.parse::<Timestamp>().ok())
                .map(|c| age(c, now)),
        ),
    ]);

    let mut conditions = Table::new(["condition", "status", "reason", "message"]);
    for c in &summary.conditions {
        conditions.row([
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default(),
        ]);
    }

    let mut credentials = Table::new(["credential", "state"]);
    credentials.row([
        "token rotated at".to_string(),
        summary
            .token_rotated_at
            .as_deref()
            .map_or_else(|| "never".into(), |t| timestamp_with_distance(t, now)),
    ]);
    credentials.row([
        "certificate expires".to_string(),
        summary.certificate_expires_at.as_deref().map_or_else(
            || "<none> (no operator-issued certificate)".into(),
            |t| timestamp_with_distance(t, now),
        ),
    ]);

    let mut out = server.render();
    out.push('\n');
    if conditions.is_empty() {
        out.push_str("No conditions yet: the operator has not reconciled this server.\n");
    } else {
        out.push_str(&conditions.render());
    }
    out.push('\n');
    out.push_str(&credentials.render());
    out
}

/// The coordinator's registered workers, by id.
pub fn render_workers(live: &StatusReply, now: Timestamp) -> String {
    if live.workers.is_empty() {
        return "No workers registered.\n".to_string();
    }
    let mut table = Table::new(["worker", "hostname", "steps/s", "last heartbeat"]);
    for (id, worker) in &live.workers {
        table.row([
            id.clone(),
            or_none(worker.hostname.as_deref()),
            or_none(worker.steps_per_second.map(|s| format!("{s:.2}"))),
            timestamp_with_distance(&worker.last_heartbeat, now),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-12-03T20:00:00Z".parse().unwrap()
    }

    fn server() -> DiLoCoServer {
        serde_json::from_value(json!({
            "apiVersion": "diloco.dev/v1alpha1",
            "kind": "DiLoCoServer",
            "metadata": {"name": "llm", "namespace": "ml",
                         "creationTimestamp": "2026-12-03T19:55:00Z"},
            "spec": {"image": "coordinator:1"},
            "status": {
                "phase": "Ready",
                "coordinator": {"round": 12, "workers": 3},
                "endpoints": {"control": "https://llm-control.ml.svc:8512"},
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "Reconciled",
                     "message": "serving", "lastTransitionTime": "2026-12-03T19:56:00Z"},
                    {"type": "CoordinatorAvailable", "status": "False", "reason": "Unreachable",
                     "message": "connection\nrefused", "lastTransitionTime": "2026-12-03T19:56:00Z"}
                ],
                "tokenRotation": {"rotatedAt": "2026-12-01T20:00:00Z"},
                "certificates": {"notAfter": "2027-03-03T20:00:00Z"}
            }
        }))
        .unwrap()
    }

    /// What `kubectl diloco status` prints for a ready server: its numbers, every condition on
    /// one line, and when its credentials changed or will expire.
    #[test]
    fn status_tables_show_phase_round_conditions_and_credentials() {
        let text = render_summary(&summarize(&server()), now());
        assert_eq!(
            text,
            "\
NAME   PHASE   ROUND   WORKERS   ENDPOINT                          AGE
llm    Ready   12      3         https://llm-control.ml.svc:8512   5m

CONDITION              STATUS   REASON        MESSAGE
Ready                  True     Reconciled    serving
CoordinatorAvailable   False    Unreachable   connection refused

CREDENTIAL            STATE
token rotated at      2026-12-01T20:00:00Z (2d ago)
certificate expires   2027-03-03T20:00:00Z (in 90d)
"
        );
    }

    /// A server the operator has not seen yet has no status: the tables say so instead of
    /// printing zeros.
    #[test]
    fn a_fresh_server_shows_none_and_no_conditions() {
        let mut server = server();
        server.status = None;
        let summary = summarize(&server);
        assert_eq!(summary.phase, None);
        assert_eq!(summary.round, None);
        let text = render_summary(&summary, now());
        assert!(text.contains("llm    <none>   <none>   <none>"), "{text}");
        assert!(text.contains("No conditions yet"), "{text}");
        assert!(text.contains("token rotated at      never"), "{text}");
    }

    /// `-o json` is the contract's summary, so scripts read the same fields as the console's.
    #[test]
    fn the_summary_serialises_as_the_consoles_json() {
        let value = serde_json::to_value(summarize(&server())).unwrap();
        assert_eq!(value["phase"], "Ready");
        assert_eq!(value["round"], 12);
        assert_eq!(value["conditions"][1]["type"], "CoordinatorAvailable");
        assert_eq!(value["certificate_expires_at"], "2027-03-03T20:00:00Z");
    }

    #[test]
    fn workers_table_lists_id_hostname_rate_and_heartbeat() {
        let live: StatusReply = serde_json::from_value(live_status()).unwrap();
        let text = render_workers(&live, now());
        assert_eq!(
            text,
            "\
WORKER   HOSTNAME   STEPS/S   LAST HEARTBEAT
w0       gpu-a      3.25      2026-12-03T19:59:55Z (5s ago)
w1       <none>     <none>    2026-12-03T19:58:00Z (2m ago)
"
        );
        let summary = with_live(summarize(&server()), &live);
        assert_eq!((summary.round, summary.workers), (Some(40), Some(2)));
    }

    /// A `/status` body with two workers (only the fields the plugin reads vary).
    pub(crate) fn live_status() -> serde_json::Value {
        let worker = |hostname: serde_json::Value, heartbeat: &str, rate: serde_json::Value| {
            json!({"hostname": hostname, "registered_at": "2026-12-03T19:00:00Z",
                   "last_heartbeat": heartbeat, "sync_round": 40,
                   "last_sync_server_round": 39, "steps_per_second": rate,
                   "output_dir": null, "stats": {}, "restored": false})
        };
        json!({
            "status": "running", "mode": "sync", "sync_round": 40, "num_workers": 2,
            "num_registered": 2,
            "workers": {
                "w0": worker(json!("gpu-a"), "2026-12-03T19:59:55Z", json!(3.25)),
                "w1": worker(json!(null), "2026-12-03T19:58:00Z", json!(null)),
            },
            "pending_submissions": [], "waiting_for": [], "receiving": [],
            "started_at": "2026-12-03T19:00:00Z", "uptime_seconds": 3600.0,
            "heartbeat_timeout": 60, "sync_timeout": 600, "min_workers": 1,
            "outer_lr": 0.7, "outer_momentum": 0.9, "outer_optimizer": "SGD",
            "save_dir": null, "last_checkpoint_round": null, "parameters_initialized": true,
            "model_params": 10, "model_size_mb": 0.1, "last_outer_step_seconds": null,
            "last_publish_seconds": null, "device": "cpu",
            "aggregate_stats": {"total_tokens": 0.0, "total_steps": 0.0, "tok_per_sec": 0.0,
                                "train_loss": null, "eval_loss": null, "num_reporting": 0}
        })
    }
}
