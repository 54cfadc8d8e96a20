//! The `diloco-operator` binary as a real process against the local control plane, scoped
//! to one test namespace. Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::processes::announced_line;
use crate::workspace_binary;

/// Coordinator images the tests' operators allow: the test names (`diloco-coordinator:test`)
/// and the chart's repository (the demo and examples).
pub const TEST_IMAGE_PREFIXES: &str = "diloco-coordinator,ghcr.io/diloco-dev/diloco-coordinator";

/// A running operator.
pub struct OperatorProcess {
    child: Child,
    /// Base URL of its `/metrics`, `/healthz` and `/readyz`.
    pub metrics_url: String,
    /// Its log (stderr).
    pub log: PathBuf,
}

impl OperatorProcess {
    /// Starts `diloco-operator run` with `kubeconfig`, watching only `namespace` (which also
    /// holds its Lease), logging to `log_dir/operator-<n>.log`.
    pub fn start(kubeconfig: &Path, namespace: &str, log_dir: &Path, extra_args: &[&str]) -> Self {
        let log = (0..)
            .map(|n| log_dir.join(format!("operator-{n}.log")))
            .find(|p| !p.exists())
            .unwrap_or_else(|| log_dir.join("operator.log"));
        let log_file = std::fs::File::create(&log).expect("create the operator log");
        let mut child = Command::new(workspace_binary("diloco-operator"))
            .args([
                "run",
                "--watch-namespace",
                namespace,
                "--operator-namespace",
                namespace,
            ])
            .args(["--metrics-listen", "127.0.0.1:0", "--log", "info,kube=warn"])
            .args(extra_args)
            .env("KUBECONFIG", kubeconfig)
            // The images the tests' servers name (`--allowed-image-prefix` in `extra_args`
            // overrides it).
            .env("DILOCO_ALLOWED_IMAGE_PREFIXES", TEST_IMAGE_PREFIXES)
            .env_remove("POD_NAMESPACE")
            .env_remove("DILOCO_WATCH_NAMESPACE")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("start diloco-operator");
        let receiver = announced_line(&mut child, "diloco-operator metrics on ");
        let metrics_url = match receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("diloco-operator did not start; its log:\n{text}");
            }
        };
        Self {
            child,
            metrics_url,
            log,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its peak resident memory (`VmHWM`) in bytes, while it runs.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The operator's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it with SIGTERM (then SIGKILL after 10 s) and waits.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.child.id().to_string())
                .status();
            for _ in 0..100 {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.terminate();
    }
}
