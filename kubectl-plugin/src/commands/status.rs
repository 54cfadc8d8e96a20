//! `status NAME [--live] [-o json]`.

use diloco_contract::api::StatusReply;
use diloco_contract::console::{ServerSummary, status_path};
use jiff::Timestamp;
use serde::Serialize;

use crate::cli::{GlobalArgs, OutputFormat, StatusArgs};
use crate::commands::console::ConsoleConnection;
use crate::commands::get_server;
use crate::console_client::{ConsoleClient, ServerRef};
use crate::error::{PluginError, Result};
use crate::kube_access::Cluster;
use crate::summary::{render_summary, render_workers, summarize, with_live};

/// `-o json`: the summary's fields, and the coordinator's `/status` under `live` with `--live`.
#[derive(Serialize)]
struct JsonStatus<'a> {
    #[serde(flatten)]
    summary: &'a ServerSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    live: Option<&'a StatusReply>,
}

/// Prints the server's state from its status, and with `--live` the coordinator's own.
pub async fn run(global: &GlobalArgs, args: &StatusArgs) -> Result<()> {
    let cluster = Cluster::connect(global).await?;
    let server = get_server(&cluster, &args.name).await?;
    let mut summary = summarize(&server);
    let live = if args.live {
        // The token first: without one there is no point starting a port-forward.
        let token = cluster.bearer_token(args.console.token_file.as_deref())?;
        let console = ConsoleConnection::open(&cluster, global, &args.console).await?;
        let server_ref = ServerRef {
            namespace: cluster.namespace.clone(),
            name: args.name.clone(),
        };
        let reply = match ConsoleClient::new(console.base_url(), token) {
            Ok(client) => {
                client
                    .get_json::<StatusReply>(
                        &status_path(&server_ref.namespace, &server_ref.name),
                        &server_ref,
                    )
                    .await
            }
            Err(error) => Err(error),
        };
        console.close().await;
        let live = reply?;
        summary = with_live(summary, &live);
        Some(live)
    } else {
        None
    };
    let now = Timestamp::now();
    match args.output {
        OutputFormat::Json => {
            let json = serde_json::to_string_pretty(&JsonStatus {
                summary: &summary,
                live: live.as_ref(),
            })
            .map_err(|e| PluginError::Other(e.into()))?;
            println!("{json}");
        }
        OutputFormat::Table => {
            print!("{}", render_summary(&summary, now));
            if let Some(live) = &live {
                println!();
                print!("{}", render_workers(live, now));
            }
        }
    }
    Ok(())
}
