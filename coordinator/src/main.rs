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
    /// Overrides `device`.
    #[arg(long, value_enum, env = "DILOCO_DEVICE")]
    device: Option<DeviceChoice>,
    /// Overrides `checkpoint.dir`.
    #[arg(long, env = "DILOCO_CHECKPOINT_DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Overrides `model.initial_parameters`.
    #[arg(long, env = "DILOCO_INITIAL_PARAMETERS")]
    initial_parameters: Option<PathBuf>,
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
    if let Some(device) = cli.device {
        config.device = device;
    }
    if cli.checkpoint_dir.is_some() {
        config.checkpoint.dir = cli.checkpoint_dir;
    }
    if cli.initial_parameters.is_some() {
        config.model.initial_parameters = cli.initial_parameters;
    }
    config.validate()?;
    if cli.check_device {
        println!("{}", describe(resolve_device(config.device)?));
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?
        .block_on(diloco_coordinator::server::run(config))
}
