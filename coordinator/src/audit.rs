//! The audit log: one JSON line per security-relevant event (registrations, departures,
//! evictions, outer steps, control actions, refused requests, credential reloads).
//!
//! Records are handed to a writer thread over a bounded queue, so no request ever waits for the
//! disk and nothing is written while the coordinator's locks are held. When the queue is full
//! (the disk is slower than a flood of refused requests) records are dropped and counted
//! (`diloco_audit_records_dropped_total`), with one warning per burst: memory stays bounded
//! whatever a client sends. A failed write is logged and counted
//! (`diloco_audit_write_failures`), never fatal: the file is reopened on the next record.
//!
//! Records carry identities and addresses, never a credential, and what a client chose (a path,
//! a hostname, a control body) is bounded: see [`bounded`] and the control-body allowlist in
//! [`control_summary`].

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use diloco_contract::api::ControlAction;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use serde_json::Value;
use tracing::warn;

/// Records waiting for the writer at most; more are dropped (and counted).
pub const QUEUE_RECORDS: usize = 4096;

/// Longest client-chosen text (path, hostname, control body field) kept in a record.
pub const MAX_RECORDED_CHARS: usize = 256;

/// Appended to text cut at [`MAX_RECORDED_CHARS`].
pub const TRUNCATION_MARKER: &str = "…[truncated]";

/// `text`, cut to [`MAX_RECORDED_CHARS`] characters with a marker when longer.
pub fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_RECORDED_CHARS) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}{TRUNCATION_MARKER}", &text[..cut]),
    }
}

/// The body fields recorded for a control action (forgather's per-action allowlist);
/// anything else a caller sends is left out, so a control request cannot inflate the log.
fn audited_fields(action: ControlAction) -> &'static [&'static str] {
    match action {
        ControlAction::SaveState | ControlAction::Shutdown => &[],
        ControlAction::KickWorker => &["worker_id"],
        ControlAction::UpdateOptimizer => &["lr", "momentum", "nesterov"],
        ControlAction::UpdateNumWorkers => &["num_workers"],
        ControlAction::Command => &["command", "worker_id"],
        ControlAction::UpdateTokenBudget => &["token_budget"],
    }
}

/// What the audit log records of a control body: the allowlisted fields, strings cut to
/// [`MAX_RECORDED_CHARS`], anything but a string, number, boolean or null replaced by its
/// type. It is taken from the body as sent, before it is parsed, so a refused body is recorded
/// too.
pub fn control_summary(action: ControlAction, body: &Value) -> Value {
    let mut summary = serde_json::Map::new();
    for field in audited_fields(action) {
        let Some(value) = body.get(*field) else {
            continue;
        };
        let recorded = match value {
            Value::String(text) => Value::String(bounded(text)),
            Value::Array(_) => Value::String("<array>".into()),
            Value::Object(_) => Value::String("<object>".into()),
            scalar => scalar.clone(),
        };
        summary.insert((*field).to_string(), recorded);
    }
    Value::Object(summary)
}

/// Longest unknown control action name recorded.
pub const MAX_ACTION_CHARS: usize = 64;

/// A control action's name as recorded: a known action as is; an unknown one (anything a
/// caller put in the path) cut to [`MAX_ACTION_CHARS`] with every character outside
/// `[A-Za-z0-9_-]` replaced by `?`, so a path cannot smuggle a secret-sized blob, a newline or
/// markup into the log.
pub fn sanitized_action(name: &str) -> String {
    let mut kept: String = name
        .chars()
        .take(MAX_ACTION_CHARS)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if name.chars().nth(MAX_ACTION_CHARS).is_some() {
        kept.push_str(TRUNCATION_MARKER);
    }
    kept
}

/// One audit record.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord {
    /// UTC, RFC 3339.
    pub ts: String,
    /// What happened: `register`, `deregister`, `eviction`, `outer_step`, `control`,
    /// `auth_failure`, `credential_reload`, …
    pub event: &'static str,
    /// The worker concerned, if any.
    pub worker_id: Option<String>,
    /// Who made the request: `worker-token`, `admin-token`, `cert:<CN>` or `anonymous`
    /// (authentication disabled); absent for the coordinator's own events and refused
    /// credentials.
    pub caller: Option<String>,
    /// The remote socket address.
    pub remote_addr: Option<String>,
    /// The round when it happened.
    pub round: Option<u64>,
    /// Event-specific details.
    pub details: Value,
}

impl AuditRecord {
    /// A record of `event`, stamped now.
    pub fn new(event: &'static str) -> Self {
        Self {
            ts: jiff::Timestamp::now().to_string(),
            event,
            worker_id: None,
            caller: None,
            remote_addr: None,
            round: None,
            details: Value::Null,
        }
    }

    /// Sets the worker.
    pub fn worker(mut self, worker_id: impl Into<String>) -> Self {
        self.worker_id = Some(worker_id.into());
        self
    }

    /// Sets the remote address.
    pub fn remote(mut self, remote: Option<SocketAddr>) -> Self {
        self.remote_addr = remote.map(|a| a.to_string());
        self
    }

    /// Sets the caller's identity.
    pub fn caller(mut self, caller: Option<String>) -> Self {
        self.caller = caller;
        self
    }

    /// Sets the round.
    pub fn round(mut self, round: u64) -> Self {
        self.round = Some(round);
        self
    }

    /// Sets the details.
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// Where records go. Cheap to call from anywhere; disabled when no path is configured.
pub struct AuditLog {
    sender: Option<mpsc::SyncSender<AuditRecord>>,
    dropped: Counter,
    /// Records are being dropped now (cleared by the next record that fits).
    dropping: AtomicBool,
}

impl AuditLog {
    /// An audit log appending to `path` (its directory is created if missing), or a no-op.
    /// `failures` counts records that could not be written, `dropped` those that found the
    /// queue full.
    pub fn start(path: Option<&Path>, failures: Counter, dropped: Counter) -> Self {
        Self::with_queue(path, failures, dropped, QUEUE_RECORDS)
    }

    fn with_queue(path: Option<&Path>, failures: Counter, dropped: Counter, queue: usize) -> Self {
        let disabled = |dropped| Self {
            sender: None,
            dropped,
            dropping: AtomicBool::new(false),
        };
        let Some(path) = path else {
            return disabled(dropped);
        };
        let (sender, receiver) = mpsc::sync_channel::<AuditRecord>(queue);
        let path = path.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_forever(&path, &receiver, &failures));
        if let Err(error) = spawned {
            warn!(%error, "could not start the audit log writer; audit records are dropped");
            return disabled(dropped);
        }
        Self {
            sender: Some(sender),
            dropped,
            dropping: AtomicBool::new(false),
        }
    }

    /// Queues a record for writing; drops it when the queue is full.
    pub fn record(&self, record: AuditRecord) {
        let Some(sender) = &self.sender else { return };
        match sender.try_send(record) {
            Ok(()) => self.dropping.store(false, Ordering::Relaxed),
            Err(mpsc::TrySendError::Full(record)) => {
                self.dropped.inc();
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    warn!(
                        event = record.event,
                        queue = QUEUE_RECORDS,
                        "the audit log writer is behind; records are dropped until it catches \
                         up (counted in diloco_audit_records_dropped_total)"
                    );
                }
            }
            // The writer only stops when the process does.
            Err(mpsc::TrySendError::Disconnected(_)) => {}
        }
    }
}

fn write_forever(path: &Path, receiver: &mpsc::Receiver<AuditRecord>, failures: &Counter) {
    let mut file: Option<File> = None;
    let mut failures_logged = 0u64;
    for record in receiver {
        let mut line = match serde_json::to_vec(&record) {
            Ok(line) => line,
            Err(_) => continue,
        };
        line.push(b'\n');
        let result =
            open(path, &mut file).and_then(|f| f.write_all(&line).and_then(|()| f.flush()));
        if let Err(error) = result {
            file = None;
            failures.inc();
            // Say it loudly at first, then once every 100 failures.
            if failures_logged < 5 || failures.get().is_multiple_of(100) {
                warn!(path = %path.display(), %error, failures = failures.get(), "audit record not written");
            }
            failures_logged += 1;
        }
    }
}

fn open<'a>(path: &Path, file: &'a mut Option<File>) -> std::io::Result<&'a mut File> {
    if file.is_none() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        *file = Some(OpenOptions::new().create(true).append(true).open(path)?);
    }
    file.as_mut()
        .ok_or_else(|| std::io::Error::other("audit file not open"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Only forgather's allowlisted fields are recorded, bounded; unknown fields never are.
    /// An unknown action's name is recorded cut and reduced to a safe alphabet.
    #[test]
    fn unknown_action_names_are_cut_and_sanitized() {
        assert_eq!(sanitized_action("save_state"), "save_state");
        assert_eq!(sanitized_action("a b\n\"c"), "a?b??c");
        let long = sanitized_action(&"x".repeat(1000));
        assert_eq!(
            long,
            format!("{}{TRUNCATION_MARKER}", "x".repeat(MAX_ACTION_CHARS))
        );
    }

    #[test]
    fn control_bodies_are_audited_by_allowlist_and_bounded() {
        let summary = |action: &str, body: Value| {
            control_summary(ControlAction::from_name(action).unwrap(), &body)
        };
        assert_eq!(
            summary("save_state", json!({"x": "y".repeat(1000)})),
            json!({})
        );
        assert_eq!(summary("shutdown", json!({"reason": "bye"})), json!({}));
        assert_eq!(
            summary("kick_worker", json!({"worker_id": "w1", "note": "n"})),
            json!({"worker_id": "w1"})
        );
        assert_eq!(
            summary(
                "update_optimizer",
                json!({"lr": 0.5, "momentum": 0.8, "nesterov": false, "token": "t"})
            ),
            json!({"lr": 0.5, "momentum": 0.8, "nesterov": false})
        );
        assert_eq!(
            summary(
                "update_num_workers",
                json!({"num_workers": 4, "extra": [1]})
            ),
            json!({"num_workers": 4})
        );
        let long = summary(
            "command",
            json!({"command": "abort", "worker_id": "w".repeat(5000), "blob": "b"}),
        );
        assert_eq!(long["command"], "abort");
        let worker_id = long["worker_id"].as_str().unwrap();
        assert!(worker_id.ends_with(TRUNCATION_MARKER));
        assert!(worker_id.len() < 400, "{}", worker_id.len());
        assert_eq!(long.as_object().unwrap().len(), 2);
        assert_eq!(
            summary("kick_worker", json!({"worker_id": {"nested": ["deep"]}})),
            json!({"worker_id": "<object>"})
        );
    }

    #[test]
    fn records_are_json_lines_and_failures_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/audit.jsonl");
        let failures = Counter::default();
        let log = AuditLog::start(Some(&path), failures.clone(), Counter::default());
        log.record(
            AuditRecord::new("register")
                .worker("w1")
                .round(3)
                .details(serde_json::json!({"hostname": "h"})),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let text = loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if text.ends_with('\n') || std::time::Instant::now() > deadline {
                break text;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let record: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(record["event"], "register");
        assert_eq!(record["worker_id"], "w1");
        assert_eq!(record["round"], 3);
        assert!(record["ts"].as_str().unwrap().ends_with('Z'));
        assert_eq!(failures.get(), 0);

        // A path whose parent is a file cannot be written: counted, not fatal.
        let blocked = dir.path().join("file");
        std::fs::write(&blocked, "").unwrap();
        let failures = Counter::default();
        let log = AuditLog::start(
            Some(&blocked.join("audit.jsonl")),
            failures.clone(),
            Counter::default(),
        );
        log.record(AuditRecord::new("register"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while failures.get() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(failures.get(), 1);
    }

    #[test]
    fn client_chosen_text_is_cut_at_the_limit_with_a_marker() {
        let short = "/register";
        assert_eq!(bounded(short), short);
        let exact = "é".repeat(MAX_RECORDED_CHARS);
        assert_eq!(bounded(&exact), exact, "characters, not bytes");
        let long = format!("/{}", "a".repeat(10_000));
        let cut = bounded(&long);
        assert_eq!(
            cut.chars().count(),
            MAX_RECORDED_CHARS + TRUNCATION_MARKER.chars().count()
        );
        assert!(cut.starts_with("/aaa") && cut.ends_with(TRUNCATION_MARKER));
    }

    /// A writer that cannot keep up (here: stuck opening a FIFO nobody reads) makes records
    /// drop, counted, instead of queueing without bound; the queued ones are written once it
    /// can go on.
    #[test]
    fn a_full_queue_drops_and_counts_records_instead_of_growing() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("audit.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let dropped = Counter::default();
        let log = AuditLog::with_queue(Some(&fifo), Counter::default(), dropped.clone(), 2);
        let sent = 10;
        for i in 0..sent {
            log.record(AuditRecord::new("auth_failure").round(i));
        }
        // Two wait in the queue, at most one more is held by the blocked writer.
        let lost = dropped.get();
        assert!((7..=8).contains(&lost), "{lost} dropped");

        let (lines, received) = std::sync::mpsc::channel();
        let reader_path = fifo.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let file = std::fs::File::open(reader_path).unwrap();
            for line in std::io::BufReader::new(file).lines() {
                let _ = lines.send(line.unwrap());
            }
        });
        let timeout = std::time::Duration::from_secs(5);
        for _ in 0..(sent - lost) {
            let line = received
                .recv_timeout(timeout)
                .expect("a queued record is written");
            let record: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(record["event"], "auth_failure");
        }
        // Once the writer keeps up again, records are no longer dropped.
        log.record(AuditRecord::new("register"));
        let line = received.recv_timeout(timeout).unwrap();
        assert!(line.contains("register"), "{line}");
        assert_eq!(dropped.get(), lost);
    }
}
