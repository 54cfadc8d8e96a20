//! A pod's container as a local process: which program, arguments and environment (mount
//! paths rewritten, listeners moved to the pod's own loopback IP), and starting and stopping it.

use std::net::Ipv4Addr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::process::{Child, Command};

use super::mount_paths::MountPaths;

/// The only image command the runner can run, and the workspace binary it runs for it.
pub(super) const COORDINATOR_COMMAND: &str = "diloco-coordinator";

/// Listen-address overrides by container port name. The coordinator's config in the pod says
/// `0.0.0.0`, but pods here share one machine, so each binds its own loopback IP instead.
const LISTEN_ENV_BY_PORT_NAME: [(&str, &str); 3] = [
    ("control", "DILOCO_LISTEN"),
    ("bulk", "DILOCO_BULK_LISTEN"),
    ("metrics", "DILOCO_METRICS_LISTEN"),
];

/// How to run one container: everything decided before the first start.
#[derive(Clone, Debug)]
pub(super) struct LaunchPlan {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    working_dir: PathBuf,
    /// stdout and stderr, appended across restarts.
    pub log_path: PathBuf,
}

impl LaunchPlan {
    /// The plan for `container` of `pod` at `ip`, or why the runner cannot run it.
    pub(super) fn new(
        pod: &Pod,
        container: &Container,
        ip: Ipv4Addr,
        coordinator_binary: &Path,
        mount_paths: &MountPaths,
        pod_dir: &Path,
    ) -> anyhow::Result<Self> {
        let command = container.command.as_deref().unwrap_or_default();
        let Some((program, command_args)) = command.split_first() else {
            bail!(
                "container {} has no command; the pod runner only runs `{COORDINATOR_COMMAND}`",
                container.name
            );
        };
        if program != COORDINATOR_COMMAND {
            bail!(
                "container {} runs `{program}`; the pod runner only runs `{COORDINATOR_COMMAND}`",
                container.name
            );
        }

        let mut env: Vec<(String, String)> = Vec::new();
        for var in container.env.iter().flatten() {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => mount_paths.rewrite(&expand(value, &env)),
                (None, None) => String::new(),
                (None, Some(source)) => match &source.field_ref {
                    Some(field) => field_value(pod, &field.field_path, ip).with_context(|| {
                        format!("env {} of container {}", var.name, container.name)
                    })?,
                    None => bail!(
                        "env {} of container {} uses a valueFrom the pod runner does not \
                         support (only fieldRef)",
                        var.name,
                        container.name
                    ),
                },
            };
            env.push((var.name.clone(), value));
        }
        for port in container.ports.iter().flatten() {
            let name = port.name.as_deref().unwrap_or_default();
            if let Some((_, var)) = LISTEN_ENV_BY_PORT_NAME.iter().find(|(n, _)| *n == name) {
                env.push((var.to_string(), format!("{ip}:{}", port.container_port)));
            }
        }

        let args = command_args
            .iter()
            .chain(container.args.iter().flatten())
            .map(|arg| mount_paths.rewrite(&expand(arg, &env)))
            .collect();
        let working_dir = match container.working_dir.as_deref() {
            Some(dir) => PathBuf::from(mount_paths.rewrite(dir)),
            None => pod_dir.to_path_buf(),
        };
        Ok(Self {
            program: coordinator_binary.to_path_buf(),
            args,
            env,
            working_dir,
            log_path: pod_dir.join(format!("{}.log", container.name)),
        })
    }

    /// Starts the process: a clean environment (only `PATH` from ours), output to the log, and
    /// killed when its `Child` is dropped or when the thread that started it exits.
    pub(super) fn spawn(&self, pod_name: &str) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("failed to open {}", self.log_path.display()))?;
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOSTNAME", pod_name)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.working_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("failed to share the log file")?)
            .stderr(log)
            .kill_on_drop(true);
        // SAFETY: between fork and exec the closure only calls prctl, which is
        // async-signal-safe, and allocates nothing. PDEATHSIG makes the kernel kill the
        // process if the test process dies without running any destructor.
        unsafe {
            command.pre_exec(|| {
                // prctl is variadic and reads an unsigned long: pass exactly that.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        command
            .spawn()
            .with_context(|| format!("failed to start {}", self.program.display()))
    }
}

/// SIGTERM, up to `grace` for the process to exit, then SIGKILL; its exit status.
pub(super) async fn stop(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Some(pid) = child.id() {
        signal(pid, libc::SIGTERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            let _ = child.kill().await;
            child.try_wait().ok().flatten()
        }
    }
}

/// Sends `signal` to process `pid`; a process already gone is not an error.
pub(super) fn signal(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// The exit code a container runtime reports: the code, or 128 + the signal that killed it.
pub(super) fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// A `fieldRef` value for an environment variable.
fn field_value(pod: &Pod, field_path: &str, ip: Ipv4Addr) -> anyhow::Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    Ok(match field_path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => ip.to_string(),
        "status.hostIP" => Ipv4Addr::LOCALHOST.to_string(),
        other => bail!("fieldRef {other} is not supported by the pod runner"),
    })
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is substituted, `$$` escapes a `$`,
/// anything else stays as written.
fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        rest = &rest[dollar..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
            continue;
        }
        if let Some(inner) = rest.strip_prefix("$(")
            && let Some(end) = inner.find(')')
            && let Some((_, value)) = env.iter().rev().find(|(k, _)| *k == inner[..end])
        {
            out.push_str(value);
            rest = &inner[end + 1..];
            continue;
        }
        out.push('$');
        rest = &rest[1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_expand_like_kubernetes() {
        let env = vec![("POD_IP".to_string(), "127.9.0.1".to_string())];
        assert_eq!(expand("--host=$(POD_IP):1", &env), "--host=127.9.0.1:1");
        assert_eq!(
            expand("$(UNKNOWN) $$(POD_IP) $", &env),
            "$(UNKNOWN) $(POD_IP) $"
        );
    }

    #[test]
    fn only_the_coordinator_command_runs_and_its_ports_move_to_the_pod_ip() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{
                "name": "coordinator",
                "command": ["diloco-coordinator"],
                "args": ["--config", "/etc/diloco/config/c.yaml"],
                "env": [
                    {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "DIR", "value": "/etc/diloco/config"},
                ],
                "ports": [{"name": "control", "containerPort": 8512}],
            }]},
        }))
        .unwrap();
        let container = &pod.spec.as_ref().unwrap().containers[0];
        let ip = Ipv4Addr::new(127, 9, 0, 1);
        let paths = MountPaths::default();
        let plan = LaunchPlan::new(
            &pod,
            container,
            ip,
            Path::new("/bin/c"),
            &paths,
            Path::new("/w"),
        )
        .unwrap();
        assert_eq!(plan.args, ["--config", "/etc/diloco/config/c.yaml"]);
        assert!(plan.env.contains(&("MY_NAME".into(), "p".into())));
        assert!(
            plan.env
                .contains(&("DILOCO_LISTEN".into(), "127.9.0.1:8512".into()))
        );
        assert_eq!(plan.log_path, Path::new("/w/coordinator.log"));

        let mut other = container.clone();
        other.command = Some(vec!["sh".into(), "-c".into(), "true".into()]);
        let error = LaunchPlan::new(
            &pod,
            &other,
            ip,
            Path::new("/bin/c"),
            &paths,
            Path::new("/w"),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("only runs `diloco-coordinator`"),
            "{error}"
        );
    }
}
