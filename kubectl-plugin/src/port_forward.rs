//! Reaching the console from the user's machine: find its Service in the operator's namespace
//! and run `kubectl port-forward` to it as a child process, on 127.0.0.1 and a local port that
//! kubectl picks (so no other process can take it between choosing and binding).

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::cli::{ConsoleArgs, GlobalArgs};
use crate::error::{PluginError, Result, kube_error};

/// The label the chart puts on the console's objects.
pub const CONSOLE_COMPONENT_LABEL: &str = "app.kubernetes.io/component=console";
/// The console Service's name ends so: `<release>-console`.
pub const CONSOLE_SERVICE_SUFFIX: &str = "-console";
/// How long kubectl may take to start forwarding.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The console's Service and the port to forward to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleService {
    pub namespace: String,
    pub name: String,
    pub port: i32,
}

/// Finds the console Service: `--console-service`, else the one labelled
/// [`CONSOLE_COMPONENT_LABEL`], else the one named `<release>-console`.
pub async fn find_console_service(
    client: &Client,
    console: &ConsoleArgs,
) -> Result<ConsoleService> {
    let namespace = &console.console_namespace;
    let services = Api::<Service>::namespaced(client.clone(), namespace);
    let what = format!("the console Service in namespace {namespace}");
    let candidates: Vec<Service> = match &console.console_service {
        Some(name) => vec![
            services
                .get(name)
                .await
                .map_err(|e| kube_error(&format!("Service {namespace}/{name}"), e))?,
        ],
        None => {
            let labelled = services
                .list(&ListParams::default().labels(CONSOLE_COMPONENT_LABEL))
                .await
                .map_err(|e| kube_error(&what, e))?
                .items;
            if labelled.is_empty() {
                services
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| kube_error(&what, e))?
                    .items
                    .into_iter()
                    .filter(|s| s.name_any().ends_with(CONSOLE_SERVICE_SUFFIX))
                    .collect()
            } else {
                labelled
            }
        }
    };
    match candidates.as_slice() {
        [] => Err(PluginError::Usage(format!(
            "no console Service in namespace {namespace}: none is labelled \
             {CONSOLE_COMPONENT_LABEL} and none is named <release>{CONSOLE_SERVICE_SUFFIX}. \
             Is the console enabled in the operator's Helm release? If it runs elsewhere, pass \
             --console-namespace and --console-service, or --console-url."
        ))),
        [service] => console_port(service).map(|port| ConsoleService {
            namespace: namespace.clone(),
            name: service.name_any(),
            port,
        }),
        several => Err(PluginError::Usage(format!(
            "several console Services in namespace {namespace} ({}); pick one with \
             --console-service",
            several
                .iter()
                .map(ResourceExt::name_any)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The Service port named `http`, else its first port.
fn console_port(service: &Service) -> Result<i32> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .cloned()
        .unwrap_or_default();
    ports
        .iter()
        .find(|p| p.name.as_deref() == Some("http"))
        .or(ports.first())
        .map(|p| p.port)
        .ok_or_else(|| {
            PluginError::Usage(format!(
                "the console Service {} has no port",
                service.name_any()
            ))
        })
}

/// A running `kubectl port-forward`; dropping it kills the child.
pub struct PortForward {
    child: Child,
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub base_url: String,
}

impl PortForward {
    /// Starts `kubectl port-forward svc/<name> :<port>` on 127.0.0.1 and waits until kubectl
    /// says which local port it listens on.
    pub async fn start(
        global: &GlobalArgs,
        console: &ConsoleArgs,
        service: &ConsoleService,
    ) -> Result<Self> {
        let mut command = Command::new(&console.kubectl);
        if let Some(kubeconfig) = &global.kubeconfig {
            command.arg("--kubeconfig").arg(kubeconfig);
        }
        if let Some(context) = &global.context {
            command.arg("--context").arg(context);
        }
        command
            .args(["port-forward", "--address", "127.0.0.1", "-n"])
            .arg(&service.namespace)
            .arg(format!("svc/{}", service.name))
            .arg(format!(":{}", service.port))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: Ctrl-C in the terminal reaches only the plugin, which then
            // stops kubectl itself (instead of racing kubectl's exit against the signal).
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| {
            PluginError::Usage(format!(
                "cannot run {} port-forward: {e}; is kubectl on PATH? (or pass --kubectl)",
                console.kubectl.display()
            ))
        })?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(PluginError::Other(anyhow::anyhow!(
                "kubectl's output was not captured"
            )));
        };
        let errors = tokio::spawn(collect_lines(stderr));
        let mut lines = BufReader::new(stdout).lines();
        let port = tokio::time::timeout(START_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(port) = forwarded_port(&line) {
                    return Some(port);
                }
            }
            None
        })
        .await;
        match port {
            Ok(Some(port)) => {
                // kubectl prints a line per connection; keep reading so it never blocks.
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                Ok(Self {
                    child,
                    base_url: format!("http://127.0.0.1:{port}"),
                })
            }
            Ok(None) => {
                let _ = child.wait().await;
                let said = errors.await.unwrap_or_default();
                Err(PluginError::Unreachable(format!(
                    "kubectl port-forward to {}/{} stopped before forwarding: {}",
                    service.namespace,
                    service.name,
                    said.trim()
                )))
            }
            Err(_) => {
                let _ = child.start_kill();
                Err(PluginError::Unreachable(format!(
                    "kubectl port-forward to {}/{} did not start within {START_TIMEOUT:?}",
                    service.namespace, service.name
                )))
            }
        }
    }

    /// Waits until kubectl exits by itself (the pod went away, the connection dropped).
    pub async fn exited(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// Stops kubectl and waits for it.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// The local port in kubectl's `Forwarding from 127.0.0.1:43615 -> 8080`.
fn forwarded_port(line: &str) -> Option<u16> {
    let rest = line.trim().strip_prefix("Forwarding from 127.0.0.1:")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// Everything `reader` says, up to a few kilobytes (kubectl's error on a failed start).
async fn collect_lines(reader: impl AsyncRead + Unpin) -> String {
    let mut lines = BufReader::new(reader).lines();
    let mut text = String::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if text.len() < 4096 {
            text.push_str(&line);
            text.push('\n');
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_port_is_read_from_kubectls_first_line() {
        assert_eq!(
            forwarded_port("Forwarding from 127.0.0.1:43615 -> 8080"),
            Some(43615)
        );
        assert_eq!(forwarded_port("Forwarding from [::1]:43615 -> 8080"), None);
        assert_eq!(forwarded_port("Handling connection for 8080"), None);
    }

    #[test]
    fn the_http_port_wins_over_the_first() {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "diloco-operator-console"},
            "spec": {"ports": [{"name": "metrics", "port": 9090}, {"name": "http", "port": 8080}]}
        }))
        .unwrap();
        assert_eq!(console_port(&service).unwrap(), 8080);
        let bare: Service =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "x"}})).unwrap();
        assert!(console_port(&bare).is_err());
    }
}
