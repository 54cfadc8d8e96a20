//! `diloco-operator`: the controller binary.
//!
//! `diloco-operator run` reconciles `DiLoCoServer`s with the ambient kubeconfig (`KUBECONFIG`
//! or the in-cluster service account); `diloco-operator crd` prints the
//! CustomResourceDefinition (pipe it to `kubectl apply -f -`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use diloco_operator::controller::WatchScope;
use diloco_operator::leader_election::LeaderElection;
use diloco_operator::metrics::{self, Metrics};
use diloco_operator::reconcile::context::Context;
use diloco_operator::settings::{
    ConsoleSettings, DEFAULT_CONSOLE_POD_LABELS, DEFAULT_COORDINATOR_REPOSITORY, ImageAllowlist,
    Settings, parse_labels, parse_service_account,
};

#[derive(Parser)]
#[command(
    version,
    about = "Kubernetes operator for DiLoCo training coordinators"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the DiLoCoServer CustomResourceDefinition as YAML.
    Crd,
    /// Run the controller.
    Run(Box<RunArgs>),
}

#[derive(Args)]
struct RunArgs {
    /// Reconcile only the DiLoCoServers of these namespaces (repeat the flag or separate with
    /// commas; default: all namespaces, which needs cluster-wide rights).
    #[arg(
        long = "watch-namespace",
        env = "DILOCO_WATCH_NAMESPACE",
        value_delimiter = ','
    )]
    watch_namespaces: Vec<String>,
    /// Namespace the operator runs in: its pods may reach the control port, and the leader
    /// election Lease lives there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "diloco-system")]
    operator_namespace: String,
    /// This replica's name in the Lease and in events.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// The cluster's DNS domain (certificate names).
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Labels of the operator's own pods (`key=value,…`): the only pods of its namespace the
    /// coordinators' NetworkPolicies admit on the control port.
    #[arg(
        long,
        env = "DILOCO_OPERATOR_POD_LABELS",
        default_value = "app.kubernetes.io/name=diloco-operator",
        value_parser = parse_labels
    )]
    operator_pod_labels: BTreeMap<String, String>,
    /// Coordinator images a DiLoCoServer may run: image-name prefixes (`repo` allows
    /// `repo:tag` and `repo@digest`; `registry/path/` allows everything below it). Repeat the
    /// flag or separate with commas.
    #[arg(
        long = "allowed-image-prefix",
        env = "DILOCO_ALLOWED_IMAGE_PREFIXES",
        value_delimiter = ',',
        default_value = DEFAULT_COORDINATOR_REPOSITORY
    )]
    allowed_image_prefixes: Vec<String>,
    /// Namespace of the cluster DNS pods (the coordinator's only egress).
    #[arg(long, default_value = "kube-system")]
    dns_namespace: String,
    /// Labels of the cluster DNS pods (`key=value,…`).
    #[arg(long, default_value = "k8s-app=kube-dns", value_parser = parse_labels)]
    dns_pod_labels: BTreeMap<String, String>,
    /// The console's ServiceAccount (`<namespace>/<name>`): every server with operator-owned
    /// TLS gets a console client certificate only this ServiceAccount may read, and the
    /// console's pods may reach the control port. Unset: no console.
    #[arg(long, env = "DILOCO_CONSOLE_SERVICE_ACCOUNT", value_parser = parse_service_account)]
    console_service_account: Option<(String, String)>,
    /// Labels of the console's pods (`key=value,…`), in the ServiceAccount's namespace: the
    /// peer the coordinators' NetworkPolicies admit on the control port.
    #[arg(
        long,
        env = "DILOCO_CONSOLE_POD_LABELS",
        default_value = DEFAULT_CONSOLE_POD_LABELS,
        value_parser = parse_labels
    )]
    console_pod_labels: BTreeMap<String, String>,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_listen: SocketAddr,
    /// Name of the leader election Lease.
    #[arg(long, default_value = "diloco-operator-leader")]
    lease_name: String,
    /// Run without leader election (only ever one replica).
    #[arg(long)]
    no_leader_election: bool,
    /// Log filter (tracing's `EnvFilter` syntax).
    #[arg(long, env = "DILOCO_LOG", default_value = "info")]
    log: String,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", diloco_crds::crd_yaml());
            Ok(())
        }
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?
            .block_on(run(*args)),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&args.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (KUBECONFIG or in-cluster)")?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let metrics = Metrics::default();
    let server = tokio::spawn(metrics::serve(args.metrics_listen, metrics.clone()));
    let settings = Settings {
        operator_namespace: args.operator_namespace.clone(),
        operator_pod_labels: args.operator_pod_labels.clone(),
        cluster_domain: args.cluster_domain.clone(),
        allowed_images: ImageAllowlist::new(args.allowed_image_prefixes.iter().cloned()),
        dns_namespace: args.dns_namespace.clone(),
        dns_pod_labels: args.dns_pod_labels.clone(),
        console: console_settings(&args),
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        metrics,
        Some(identity.clone()),
    ));

    let scope = WatchScope::from_namespaces(&args.watch_namespaces);
    if args.no_leader_election {
        return diloco_operator::controller::run(ctx, scope).await;
    }
    // A standby is Ready once it could do the job (CRD installed, RBAC in place), not only
    // once it leads: a rolling update waits for the new pod to be Ready before it stops the
    // old one, and the old one holds the lease until it stops.
    diloco_operator::controller::check_access(&client, &scope).await?;
    ctx.metrics.set_ready();
    let controller = diloco_operator::controller::run(ctx, scope);
    let election = LeaderElection::new(
        client,
        &args.operator_namespace,
        &args.lease_name,
        &identity,
    );
    tokio::select! {
        () = election.acquire() => {}
        _ = tokio::signal::ctrl_c() => return Ok(()),
        result = server => return result.context("metrics server stopped")?,
    }
    let result = tokio::select! {
        result = controller => result,
        () = election.hold() => Err(anyhow::anyhow!("lost leadership; exiting so a new leader takes over")),
    };
    // The controller returns on SIGTERM/SIGINT once in-flight reconciles finish.
    election.release().await;
    result
}

/// The console settings, when a console ServiceAccount is named.
fn console_settings(args: &RunArgs) -> Option<ConsoleSettings> {
    let (namespace, service_account) = args.console_service_account.clone()?;
    Some(ConsoleSettings {
        namespace,
        service_account,
        pod_labels: args.console_pod_labels.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(args: &[&str]) -> RunArgs {
        let argv = ["diloco-operator", "run"].iter().chain(args);
        match Cli::try_parse_from(argv).expect("the flags parse").command {
            Command::Run(args) => *args,
            Command::Crd => panic!("parsed as `crd`"),
        }
    }

    #[test]
    fn watch_namespaces_may_be_repeated_or_comma_separated() {
        let args = run_args(&["--watch-namespace", "a,b", "--watch-namespace", "c"]);
        assert_eq!(
            WatchScope::from_namespaces(&args.watch_namespaces),
            WatchScope::from_namespaces(["a", "b", "c"])
        );
        let single = run_args(&["--watch-namespace", "a"]);
        assert_eq!(single.watch_namespaces, ["a"]);
    }

    #[test]
    fn the_console_is_off_unless_its_service_account_is_named() {
        assert_eq!(console_settings(&run_args(&[])), None);
        let args = run_args(&[
            "--console-service-account",
            "ops/console",
            "--console-pod-labels",
            "app=console,tier=web",
        ]);
        assert_eq!(
            console_settings(&args),
            Some(ConsoleSettings {
                namespace: "ops".into(),
                service_account: "console".into(),
                pod_labels: BTreeMap::from([
                    ("app".into(), "console".into()),
                    ("tier".into(), "web".into())
                ]),
            })
        );
        assert!(
            Cli::try_parse_from(["diloco-operator", "run", "--console-service-account", "x"])
                .is_err()
        );
    }
}
