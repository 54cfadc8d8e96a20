//! `diloco-operator`: the controller binary.
//!
//! `diloco-operator crd` prints the `DiLoCoServer` CustomResourceDefinition (pipe it to
//! `kubectl apply -f -`).

use clap::{Parser, Subcommand};

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
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", diloco_crds::crd_yaml()),
    }
    Ok(())
}
