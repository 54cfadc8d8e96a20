//! `diloco-coordinator`: the DiLoCo coordinator server.

use clap::Parser;
use diloco_coordinator::device::{DeviceChoice, describe, resolve_device};

#[derive(Parser)]
#[command(version, about = "DiLoCo coordinator (outer optimizer)")]
struct Cli {
    /// Where the outer optimizer runs.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto, env = "DILOCO_DEVICE")]
    device: DeviceChoice,
    /// Print the device libtorch gives us and exit.
    #[arg(long)]
    check_device: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let device = resolve_device(cli.device)?;
    println!("{}", describe(device));
    if cli.check_device {
        return Ok(());
    }
    anyhow::bail!("the coordinator server is not built yet (only --check-device works)")
}
