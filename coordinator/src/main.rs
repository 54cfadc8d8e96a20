//! `diloco-coordinator --config FILE`: the DiLoCo coordinator server.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use diloco_coordinator::config::Config;
use diloco_coordinator::device::{DeviceChoice, describe, resolve_device};

#[derive(Parser)]
#[command(
    version,
    about = "DiLoCo coordinator: the outer optimizer workers sync with"
)]
struct Cli {
    /// YAML configuration file (see docs/coordinator.md); defaults apply without one.
    #[arg(long, env = "DILOCO_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides `listen`.
    #[arg(long, env = "DILOCO_LISTEN")]
    listen: Option<SocketAddr>,
    /// Overrides `bulk.listen` (when the configuration has a bulk plane).
    #[arg(long, env = "DILOCO_BULK_LISTEN")]
    bulk_listen: Option<SocketAddr>,
    /// Overrides `metrics.listen` (when the configuration has a metrics listener).
    #[arg(long, env = "DILOCO_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Overrides `device`.
    #[arg(long, env = "DILOCO_DEVICE")]
    device: Option<DeviceChoice>,
    /// Overrides `checkpoint.dir`.
    #[arg(long, env = "DILOCO_CHECKPOINT_DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Overrides `model.initial_parameters`.
    #[arg(long, env = "DILOCO_INITIAL_PARAMETERS")]
    initial_parameters: Option<PathBuf>,
    /// Overrides `auth.token_dir`: the directory with the bearer token files.
    #[arg(long, env = "DILOCO_TOKEN_DIR")]
    token_dir: Option<PathBuf>,
    /// Overrides `auth.admin_token_dir`: the directory with the admin bearer token files.
    #[arg(long, env = "DILOCO_ADMIN_TOKEN_DIR")]
    admin_token_dir: Option<PathBuf>,
    /// Overrides `auth.clients_file`: the allowed client certificates and their roles.
    #[arg(long, env = "DILOCO_CLIENTS_FILE")]
    clients_file: Option<PathBuf>,
    /// Sets `auth.disabled`: run without authentication.
    #[arg(long)]
    disable_auth: bool,
    /// Overrides `audit.path`: the JSONL audit log.
    #[arg(long, env = "DILOCO_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// Sets `insecure`: allow a non-loopback listener without TLS.
    #[arg(long)]
    insecure: bool,
    /// Log filter (tracing's `EnvFilter` syntax).
    #[arg(long, env = "DILOCO_LOG", default_value = "info")]
    log: String,
    /// Print the device libtorch gives us and exit.
    #[arg(long)]
    check_device: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).context("invalid --log filter")?,
        )
        .with_writer(std::io::stderr)
        .init();
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(listen) = cli.listen {
        config.listen = listen;
    }
    if let (Some(listen), Some(bulk)) = (cli.bulk_listen, config.bulk.as_mut()) {
        bulk.listen = listen;
    }
    if let (Some(listen), Some(metrics)) = (cli.metrics_listen, config.metrics.as_mut()) {
        metrics.listen = listen;
    }
    if let Some(device) = cli.device {
        config.device = device;
    }
    if cli.checkpoint_dir.is_some() {
        config.checkpoint.dir = cli.checkpoint_dir;
    }
    if cli.initial_parameters.is_some() {
        config.model.initial_parameters = cli.initial_parameters;
    }
    if cli.token_dir.is_some() {
        config.auth.token_dir = cli.token_dir;
    }
    if cli.admin_token_dir.is_some() {
        config.auth.admin_token_dir = cli.admin_token_dir;
    }
    if cli.clients_file.is_some() {
        config.auth.clients_file = cli.clients_file;
    }
    config.auth.disabled |= cli.disable_auth;
    if cli.audit_log.is_some() {
        config.audit.path = cli.audit_log;
    }
    config.insecure |= cli.insecure;
    if cli.check_device {
        println!("{}", describe(resolve_device(config.device)?));
        return Ok(());
    }
    config.validate()?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?
        .block_on(diloco_coordinator::server::run(config))
}
