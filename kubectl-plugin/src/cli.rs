//! The command line: kubectl's global flags, then one subcommand.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Namespace the chart installs the operator (and the console) into by default.
pub const DEFAULT_CONSOLE_NAMESPACE: &str = "diloco-system";

/// `kubectl diloco`: look after DiLoCoServers from the terminal.
#[derive(Debug, Parser)]
#[command(name = "kubectl-diloco", bin_name = "kubectl diloco", version, about, long_about = None)]
pub struct Cli {
    /// Flags every subcommand takes, as kubectl spells them.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// kubectl's own flags, so `kubectl diloco` reads the same cluster as `kubectl`.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Path to the kubeconfig file (else `KUBECONFIG`, else `~/.kube/config`).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (else its current context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace of the DiLoCoServer (else the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

/// Where the console is, for `console` and every `--live` call.
#[derive(Debug, Clone, Args)]
pub struct ConsoleArgs {
    /// The console's URL; skips the port-forward (for example an Ingress in front of it).
    #[arg(long, value_name = "URL")]
    pub console_url: Option<String>,
    /// Namespace the console (the operator's release) runs in.
    #[arg(long, value_name = "NAMESPACE", default_value = DEFAULT_CONSOLE_NAMESPACE)]
    pub console_namespace: String,
    /// The console's Service (else the one labelled `app.kubernetes.io/component=console`,
    /// else the one named `<release>-console`).
    #[arg(long, value_name = "NAME")]
    pub console_service: Option<String>,
    /// A file holding the Kubernetes bearer token to show the console, when the kubeconfig's
    /// user has none (e.g. the output of `kubectl create token`). Never the token itself.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// The kubectl to run `port-forward` with.
    #[arg(long, value_name = "PATH", default_value = "kubectl")]
    pub kubectl: PathBuf,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Phase, round, workers, endpoint, conditions and credential state of a DiLoCoServer.
    Status(StatusArgs),
    /// Write a server's worker bundle (token, CA, endpoints) into a new private directory.
    Credentials(CredentialsArgs),
    /// Have the operator mint a new worker token (the old one stays valid for the grace period).
    RotateToken(RotateArgs),
    /// Have the operator re-issue the server's and clients' leaf certificates.
    RotateCertificates(RotateArgs),
    /// Port-forward to the console and print its URL; Ctrl-C stops it.
    Console(ConsoleCommandArgs),
}

/// `status NAME`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The DiLoCoServer.
    pub name: String,
    /// Also read the coordinator's live `/status` through the console (workers table).
    #[arg(long)]
    pub live: bool,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Where the console is (for `--live`).
    #[command(flatten)]
    pub console: ConsoleArgs,
}

/// `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned tables.
    Table,
    /// The summary as JSON.
    Json,
}

/// `credentials NAME --out DIR`.
#[derive(Debug, Args)]
pub struct CredentialsArgs {
    /// The DiLoCoServer.
    pub name: String,
    /// A directory to create (mode 0700), or an empty one of yours that only you can access.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `rotate-token NAME` and `rotate-certificates NAME`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The DiLoCoServer.
    pub name: String,
    /// Wait until the operator reports the rotation done.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits (`90s`, `5m`).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// `console`.
#[derive(Debug, Args)]
pub struct ConsoleCommandArgs {
    /// Where the console is.
    #[command(flatten)]
    pub console: ConsoleArgs,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    diloco_crds::parse_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kubectl's flags work before and after the subcommand, as they do for kubectl.
    #[test]
    fn global_flags_are_accepted_anywhere() {
        let cli = Cli::try_parse_from([
            "kubectl-diloco",
            "--context",
            "prod",
            "status",
            "llm",
            "-n",
            "ml",
        ])
        .unwrap();
        assert_eq!(cli.global.context.as_deref(), Some("prod"));
        assert_eq!(cli.global.namespace.as_deref(), Some("ml"));
        assert!(matches!(cli.command, Command::Status(ref s) if s.name == "llm" && !s.live));
    }

    #[test]
    fn a_timeout_is_a_duration_with_a_unit() {
        let cli = Cli::try_parse_from([
            "kubectl-diloco",
            "rotate-token",
            "llm",
            "--wait",
            "--timeout",
            "90s",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, Command::RotateToken(ref r) if r.wait && r.timeout == Duration::from_secs(90))
        );
        let error =
            Cli::try_parse_from(["kubectl-diloco", "rotate-token", "llm", "--timeout", "9"])
                .unwrap_err()
                .to_string();
        assert!(error.contains("not a duration"), "{error}");
    }
}
