//! `diloco-console`: serves the console with the ambient Kubernetes credentials (the pod's
//! ServiceAccount, `KUBECONFIG`, or `--kubeconfig`).

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use diloco_console::ConsoleSettings;
use diloco_console::settings::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_SESSIONS};
use kube::config::{KubeConfigOptions, Kubeconfig};

#[derive(Parser)]
#[command(
    version,
    about = "Web console for DiLoCoServers: Kubernetes login, plots and control actions"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "DILOCO_CONSOLE_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// The cluster's DNS domain (coordinators are `<name>-control.<ns>.svc.<domain>`).
    #[arg(long, env = "DILOCO_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Seconds without a request after which a session ends.
    #[arg(long, env = "DILOCO_CONSOLE_IDLE_TIMEOUT_SECONDS", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs())]
    idle_timeout_seconds: u64,
    /// Sessions held at most (the least recently used one ends first).
    #[arg(long, env = "DILOCO_CONSOLE_MAX_SESSIONS", default_value_t = DEFAULT_MAX_SESSIONS)]
    max_sessions: usize,
    /// A kubeconfig to use instead of the in-cluster ServiceAccount or `KUBECONFIG`.
    #[arg(long, env = "DILOCO_CONSOLE_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// `HOST=IP:PORT`: connect to this address for the coordinator looked up as HOST
    /// (`<name>-control.<ns>.svc.<domain>`), e.g. through a port-forward when running outside
    /// the cluster; its certificate is still verified. Repeatable.
    #[arg(long = "resolve", value_parser = parse_resolve)]
    resolve: Vec<(String, SocketAddr)>,
    /// Log filter (tracing's `EnvFilter` syntax).
    #[arg(long, env = "DILOCO_LOG", default_value = "info")]
    log: String,
}

fn parse_resolve(text: &str) -> Result<(String, SocketAddr), String> {
    let (host, address) = text
        .split_once('=')
        .ok_or_else(|| "expected HOST=IP:PORT".to_string())?;
    let address = address
        .parse()
        .map_err(|e| format!("{address} is not IP:PORT: {e}"))?;
    Ok((host.to_ascii_lowercase(), address))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in a pod's log.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let config =
                kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                    .await
                    .context("the kubeconfig is not usable")?;
            kube::Client::try_from(config).context("no Kubernetes client")?
        }
        None => kube::Client::try_default()
            .await
            .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?,
    };
    let settings = ConsoleSettings {
        cluster_domain: cli.cluster_domain,
        idle_timeout: Duration::from_secs(cli.idle_timeout_seconds.max(1)),
        max_sessions: cli.max_sessions,
        resolve: cli.resolve.into_iter().collect::<BTreeMap<_, _>>(),
    };
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, "diloco-console listening");
    // Scripts find the port when it was picked at run time (`--listen 127.0.0.1:0`).
    println!("diloco-console listening on http://{address}");
    diloco_console::serve(listener, client, settings, shutdown_signal())
        .await
        .context("the server failed")?;
    tracing::info!("diloco-console stopped");
    Ok(())
}

/// SIGTERM (a pod being stopped) or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}
