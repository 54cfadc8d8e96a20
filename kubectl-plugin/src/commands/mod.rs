//! One module per subcommand; [`run`] dispatches.

pub mod console;
pub mod credentials;
pub mod rotate;
pub mod status;

use diloco_contract::console::Rotation;
use diloco_crds::DiLoCoServer;
use kube::Api;

use crate::cli::{Cli, Command};
use crate::error::{Result, kube_error};
use crate::kube_access::Cluster;

/// Runs the subcommand `cli` names.
pub async fn run(cli: Cli) -> Result<()> {
    let global = &cli.global;
    match &cli.command {
        Command::Status(args) => status::run(global, args).await,
        Command::Credentials(args) => credentials::run(global, args).await,
        Command::RotateToken(args) => rotate::run(global, args, Rotation::Token).await,
        Command::RotateCertificates(args) => {
            rotate::run(global, args, Rotation::Certificates).await
        }
        Command::Console(args) => console::run(global, &args.console).await,
    }
}

/// The DiLoCoServer `name` in the cluster's namespace.
pub(crate) async fn get_server(cluster: &Cluster, name: &str) -> Result<DiLoCoServer> {
    Api::<DiLoCoServer>::namespaced(cluster.client.clone(), &cluster.namespace)
        .get(name)
        .await
        .map_err(|e| kube_error(&format!("DiLoCoServer {}/{name}", cluster.namespace), e))
}
