//! The `diloco-operator` binary as a real process against the local control plane, scoped
//! to one test namespace or configured like a chart's operator Deployment. Killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;

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
        let mut args: Vec<String> = ["--watch-namespace", namespace]
            .into_iter()
            .chain(["--operator-namespace", namespace])
            .map(str::to_string)
            .collect();
        args.extend(extra_args.iter().map(|a| a.to_string()));
        // The images the tests' servers name (`--allowed-image-prefix` in `extra_args`
        // overrides it).
        let env = [(
            "DILOCO_ALLOWED_IMAGE_PREFIXES".to_string(),
            TEST_IMAGE_PREFIXES.to_string(),
        )];
        Self::start_with(kubeconfig, log_dir, &args, &env)
    }

    /// Starts `diloco-operator run` configured exactly like the operator container of
    /// `deployment` (a chart's, read back from the API server): its arguments and its
    /// environment, with the `fieldRef`s a kubelet would resolve (`metadata.namespace` is the
    /// Deployment's namespace, `metadata.name` a made-up pod name). Only the metrics listener
    /// (loopback, a free port) and the log filter are the test's own.
    pub fn start_like(deployment: &Deployment, kubeconfig: &Path, log_dir: &Path) -> Self {
        let namespace = deployment.metadata.namespace.clone().unwrap_or_default();
        let container = deployment
            .spec
            .template
            .spec
            .as_ref()
            .and_then(|pod| pod.containers.first())
            .expect("the Deployment has a container");
        let args: Vec<String> = container
            .args
            .iter()
            .flatten()
            .filter(|a| a.as_str() != "run")
            .filter(|a| !a.starts_with("--metrics-listen") && !a.starts_with("--log"))
            .cloned()
            .collect();
        let env: Vec<(String, String)> = container
            .env
            .iter()
            .flatten()
            .map(|var| {
                let field = var
                    .value_from
                    .as_ref()
                    .and_then(|from| from.field_ref.as_ref())
                    .map(|field| field.field_path.as_str());
                let value = match (&var.value, field) {
                    (Some(value), _) => value.clone(),
                    (None, Some("metadata.namespace")) => namespace.clone(),
                    (None, Some("metadata.name")) => "diloco-operator-test-pod".to_string(),
                    _ => panic!("env {} has a source the test cannot resolve", var.name),
                };
                (var.name.clone(), value)
            })
            .collect();
        Self::start_with(kubeconfig, log_dir, &args, &env)
    }

    /// Starts `diloco-operator run <args>` with `kubeconfig` and `env`; no other `DILOCO_*` or
    /// `POD_*` variable of the test's own environment leaks in.
    fn start_with(
        kubeconfig: &Path,
        log_dir: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Self {
        let log = (0..)
            .map(|n| log_dir.join(format!("operator-{n}.log")))
            .find(|p| !p.exists())
            .unwrap_or_else(|| log_dir.join("operator.log"));
        let log_file = std::fs::File::create(&log).expect("create the operator log");
        let mut command = Command::new(workspace_binary("diloco-operator"));
        command
            .arg("run")
            .args(["--metrics-listen", "127.0.0.1:0", "--log", "info,kube=warn"])
            .args(args)
            .env("KUBECONFIG", kubeconfig);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("DILOCO_") || key.starts_with("POD_") {
                command.env_remove(key.as_ref());
            }
        }
        let mut child = command
            .envs(env.iter().map(|(key, value)| (key, value)))
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
