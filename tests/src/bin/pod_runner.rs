//! `diloco-pod-runner`: the test suite's stand-in kubelet as a command, for `make demo` and
//! for trying the operator by hand on the local control plane. It runs the pods of one
//! namespace (the coordinator pods the operator creates) as local processes on loopback IPs,
//! prints each pod's state changes, and kills everything it started on SIGINT or SIGTERM.
//!
//! ```text
//! KUBECONFIG=… diloco-pod-runner --namespace default --work-dir /tmp/pods
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use diloco_tests::pod_runner::PodRunner;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(about = "Run a namespace's coordinator pods as local processes (no container runtime)")]
struct Cli {
    /// Namespace whose pods to run.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Where the pods' volumes, logs and state live.
    #[arg(long)]
    work_dir: PathBuf,
    /// The `diloco-coordinator` binary to run (default: the one beside this binary).
    #[arg(long)]
    coordinator: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let coordinator = match cli.coordinator {
        Some(path) => path,
        None => std::env::current_exe()
            .context("cannot locate this binary")?
            .with_file_name("diloco-coordinator"),
    };
    anyhow::ensure!(
        coordinator.is_file(),
        "{} does not exist (build it with `cargo build --bins`)",
        coordinator.display()
    );
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the API server (is KUBECONFIG set?)")?;
    let runner = PodRunner::start_with(client, &cli.namespace, &cli.work_dir, coordinator).await?;
    println!(
        "diloco-pod-runner: node {} runs the pods of namespace {}",
        runner.node_name(),
        cli.namespace
    );
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut reported = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = tick.tick() => {}
        }
        for pod in runner.pods() {
            let state = match (pod.ready, pod.pid) {
                (true, _) => "ready",
                (false, Some(_)) => "running, not ready",
                (false, None) => "not running",
            };
            let line = format!("{state} at {} (restarts: {})", pod.ip, pod.restart_count);
            if reported.get(&pod.name) != Some(&line) {
                println!("pod {}: {line}", pod.name);
                reported.insert(pod.name.clone(), line);
            }
        }
    }
    println!("diloco-pod-runner: stopping every pod process");
    drop(runner);
    Ok(())
}
