//! Real processes for end-to-end tests: the coordinator binary and the example worker, on
//! loopback, with ports picked at run time. Everything started here is killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::workspace_binary;

/// A running `diloco-coordinator`.
pub struct CoordinatorProcess {
    child: Child,
    /// Base URL of its control plane.
    pub url: String,
    /// Its working directory (config, log, checkpoints).
    pub dir: PathBuf,
}

/// CPU seconds (user + system, every thread, finished ones included) that process `pid`
/// (`None`: this one) has used so far, from `/proc/<pid>/stat`; 0 where that is unreadable.
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let path = pid.map_or("/proc/self/stat".to_string(), |pid| {
        format!("/proc/{pid}/stat")
    });
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // The command name may hold spaces; the numeric fields start after its closing ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime: fields 14 and 15 of proc(5), the 12th and 13th after the name.
    let ticks: f64 = fields
        .get(11..13)
        .map(|both| both.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / per_second
}

impl CoordinatorProcess {
    /// Starts a coordinator in `dir` with `config` (YAML). Without a `listen:` line in the
    /// config it binds a free loopback port; without an `auth:` section it runs with
    /// authentication disabled (tests of other things).
    pub fn start(dir: &Path, config: &str) -> Self {
        Self::start_with_args(dir, config, &[])
    }

    /// [`Self::start`] with extra command-line arguments.
    pub fn start_with_args(dir: &Path, config: &str, args: &[&str]) -> Self {
        write_config(dir, config);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("coordinator.log"))
            .unwrap();
        let mut child = Command::new(workspace_binary("diloco-coordinator"))
            .arg("--config")
            .arg("coordinator.yaml")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let receiver = announced_line(&mut child, "diloco-coordinator listening on ");
        let url = match receiver.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.join("coordinator.log")).unwrap_or_default();
                panic!("the coordinator did not start listening; its log:\n{log}");
            }
        };
        Self {
            child,
            url,
            dir: dir.to_path_buf(),
        }
    }

    /// Runs a coordinator that is expected to refuse to start: its exit status and stderr.
    pub fn refused(dir: &Path, config: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
        write_config(dir, config);
        let output = Command::new(workspace_binary("diloco-coordinator"))
            .arg("--config")
            .arg("coordinator.yaml")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        (
            output.status,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// The `host:port` it listens on.
    pub fn address(&self) -> &str {
        self.url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its peak resident set size so far (`VmHWM` in `/proc/PID/status`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the coordinator is running");
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("/proc/PID/status has a VmHWM line");
        kib * 1024
    }

    /// CPU seconds it has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(Some(self.child.id()))
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("coordinator.log")).unwrap_or_default()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for it to exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        self.child.wait().unwrap()
    }
}

impl Drop for CoordinatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

fn write_config(dir: &Path, config: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let mut config = config.to_string();
    if !config.contains("listen:") {
        config = format!("listen: 127.0.0.1:0\n{config}");
    }
    if !config.contains("auth:") {
        config.push_str("\nauth: {disabled: true}\n");
    }
    std::fs::write(dir.join("coordinator.yaml"), config).unwrap();
}

/// Sends a signal (`TERM`, `KILL`, `STOP`, `CONT`) to a process.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A running `diloco-example-worker`.
pub struct WorkerProcess {
    child: Option<Child>,
    /// Its id.
    pub worker_id: String,
}

impl WorkerProcess {
    /// Starts the example worker with `args`, stdout (JSON lines) and stderr captured.
    pub fn start(worker_id: &str, args: &[&str]) -> Self {
        let child = Command::new(workspace_binary("diloco-example-worker"))
            .arg("--worker-id")
            .arg(worker_id)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            worker_id: worker_id.to_string(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits for it to exit (at most `timeout`) and returns its JSON lines; panics with its
    /// stderr if it failed.
    pub fn finish(mut self, timeout: Duration) -> Vec<serde_json::Value> {
        let child = self.child.take().unwrap();
        let (sender, receiver) = mpsc::channel();
        let pid = child.id();
        std::thread::spawn(move || {
            let _ = sender.send(child.wait_with_output());
        });
        let output = match receiver.recv_timeout(timeout) {
            Ok(output) => output.unwrap(),
            Err(_) => {
                signal(pid, "KILL");
                panic!(
                    "worker {} did not finish within {timeout:?}",
                    self.worker_id
                );
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "worker {} failed ({}):\n{stdout}\n{}",
            self.worker_id,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The JSON lines of `event` kind.
pub fn events<'a>(lines: &'a [serde_json::Value], event: &str) -> Vec<&'a serde_json::Value> {
    lines.iter().filter(|l| l["event"] == event).collect()
}

/// Reads `child`'s stdout on a thread of its own and sends the rest of the first line that
/// starts with `prefix` (the address a server prints once it listens).
pub fn announced_line(child: &mut Child, prefix: &'static str) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(prefix) {
                let _ = sender.send(rest.to_string());
            }
        }
    });
    receiver
}
