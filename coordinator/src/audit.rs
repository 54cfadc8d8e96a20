//! The audit log: one JSON line per security-relevant event (registrations, departures,
//! evictions, outer steps, control actions, authentication failures, credential reloads).
//!
//! Records are handed to a writer thread over a channel, so no request ever waits for the
//! disk and nothing is written while the coordinator's locks are held. A failed write is
//! logged and counted (`diloco_audit_write_failures`), never fatal: the file is reopened on
//! the next record. Records carry identities and addresses, never a credential.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc;

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use serde_json::Value;
use tracing::warn;

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
    /// The authenticated peer: `bearer` or a client certificate's subject.
    pub peer: Option<String>,
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
            peer: None,
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

    /// Sets the authenticated peer.
    pub fn peer(mut self, peer: Option<String>) -> Self {
        self.peer = peer;
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
    sender: Option<mpsc::Sender<AuditRecord>>,
}

impl AuditLog {
    /// An audit log appending to `path` (its directory is created if missing), or a no-op.
    pub fn start(path: Option<&Path>, failures: Counter) -> Self {
        let Some(path) = path else {
            return Self { sender: None };
        };
        let (sender, receiver) = mpsc::channel::<AuditRecord>();
        let path = path.to_path_buf();
        let spawned = std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || write_forever(&path, &receiver, &failures));
        if let Err(error) = spawned {
            warn!(%error, "could not start the audit log writer; audit records are dropped");
            return Self { sender: None };
        }
        Self {
            sender: Some(sender),
        }
    }

    /// Queues a record for writing.
    pub fn record(&self, record: AuditRecord) {
        if let Some(sender) = &self.sender {
            // The writer only stops when the process does.
            let _ = sender.send(record);
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

    #[test]
    fn records_are_json_lines_and_failures_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit/audit.jsonl");
        let failures = Counter::default();
        let log = AuditLog::start(Some(&path), failures.clone());
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
        let log = AuditLog::start(Some(&blocked.join("audit.jsonl")), failures.clone());
        log.record(AuditRecord::new("register"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while failures.get() == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(failures.get(), 1);
    }
}
