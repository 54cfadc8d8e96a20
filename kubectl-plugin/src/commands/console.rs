//! `console`: port-forward to the console and print its URL until Ctrl-C; and the connection
//! every `--live` call goes through.

use crate::cli::{ConsoleArgs, GlobalArgs};
use crate::error::{PluginError, Result};
use crate::kube_access::Cluster;
use crate::port_forward::{PortForward, find_console_service};

/// The console reached for one command: `--console-url`, or a port-forward started for it.
pub struct ConsoleConnection {
    forward: Option<PortForward>,
    base_url: String,
}

impl ConsoleConnection {
    /// Uses `--console-url`, else finds the console Service and port-forwards to it.
    pub async fn open(
        cluster: &Cluster,
        global: &GlobalArgs,
        console: &ConsoleArgs,
    ) -> Result<Self> {
        if let Some(url) = &console.console_url {
            return Ok(Self {
                forward: None,
                base_url: url.trim_end_matches('/').to_string(),
            });
        }
        let service = find_console_service(&cluster.client, console).await?;
        let forward = PortForward::start(global, console, &service).await?;
        Ok(Self {
            base_url: forward.base_url.clone(),
            forward: Some(forward),
        })
    }

    /// The console's base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Stops the port-forward, if one was started.
    pub async fn close(self) {
        if let Some(forward) = self.forward {
            forward.stop().await;
        }
    }
}

/// Prints the console's URL and keeps the port-forward up until Ctrl-C.
pub async fn run(global: &GlobalArgs, console: &ConsoleArgs) -> Result<()> {
    if let Some(url) = &console.console_url {
        println!("{}/", url.trim_end_matches('/'));
        return Ok(());
    }
    let cluster = Cluster::connect(global).await?;
    let service = find_console_service(&cluster.client, console).await?;
    let mut forward = PortForward::start(global, console, &service).await?;
    println!("{}/", forward.base_url);
    eprintln!(
        "Forwarding to Service {}/{} port {}. Open the URL and sign in with a Kubernetes token \
         (`kubectl create token <serviceaccount> -n <namespace>`). Press Ctrl-C to stop.",
        service.namespace, service.name, service.port
    );
    // The select ends before `forward` is stopped: its `exited` future borrows it.
    let exited = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        status = forward.exited() => Some(status),
    };
    match exited {
        None => {
            forward.stop().await;
            eprintln!("Stopped.");
            Ok(())
        }
        Some(status) => Err(PluginError::Unreachable(format!(
            "kubectl port-forward stopped ({}); the console pod may have restarted: run \
             `kubectl diloco console` again",
            status.map_or_else(|e| e.to_string(), |s| s.to_string())
        ))),
    }
}
