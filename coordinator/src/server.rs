//! Running the coordinator: restore or initialize, listen, tick, and shut down cleanly
//! (checkpoint first, then release waiting workers, then stop within a bounded time).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::net::TcpListener;
use tower_http::normalize_path::NormalizePath;
use tracing::{info, warn};

use crate::audit::AuditRecord;
use crate::auth::{ClientAllowlist, Credentials, TokenStore};
use crate::checkpoint;
use crate::config::Config;
use crate::device::{describe, resolve_device};
use crate::engine::Coordinator;
use crate::initial_parameters;
use crate::model_definition::ModelDefinition;
use crate::tls::TlsReloader;

/// Longest wait for in-flight requests after a shutdown was requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Builds the coordinator from the configuration: from the newest checkpoint if there is
/// one, else from `model.initial_parameters`, else uninitialized.
pub fn build(config: Config) -> anyhow::Result<Arc<Coordinator>> {
    let device = resolve_device(config.device)?;
    info!(device = %describe(device), "libtorch device");
    let restored = match &config.checkpoint.dir {
        Some(dir) => checkpoint::load_latest(dir)?,
        None => None,
    };
    let initial = match (&restored, &config.model.initial_parameters) {
        (None, Some(path)) => Some(initial_parameters::read(path)?),
        _ => None,
    };
    let definition = match &config.model.definition_dir {
        Some(dir) => {
            let definition = ModelDefinition::load(dir)?;
            info!(
                files = definition.files().len(),
                bundle_hash = definition.bundle_hash(),
                "model definition served at /model_def"
            );
            Some(definition)
        }
        None => None,
    };
    if restored.is_none() && initial.is_none() {
        info!(
            "no checkpoint and no model.initial_parameters: the first worker's /init_params defines the model"
        );
    }
    Ok(Coordinator::with_definition(
        config, device, restored, initial, definition,
    ))
}

/// Serves until SIGTERM, SIGINT or `/control/shutdown`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let coordinator = build(config)?;
    let http_limits = crate::listener::HttpLimits::from(&coordinator.config().limits);
    let credentials = load_credentials(&coordinator)?;
    let tls = match &coordinator.config().tls {
        Some(files) => {
            let tls = TlsReloader::load(files).context("cannot set up TLS")?;
            info!(cert = %files.cert.display(), client_ca = ?files.client_ca, "TLS on");
            Some(Arc::new(tls))
        }
        None => None,
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("failed to bind {listen}"))?;
    let address = listener.local_addr()?;
    // Tests and scripts read this line to learn the port when binding port 0.
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("diloco-coordinator listening on {scheme}://{address}");
    info!(%address, "listening");
    let mut bulk_advert = None;
    let bulk = match coordinator.config().bulk.clone() {
        Some(bulk) => {
            let listener = TcpListener::bind(bulk.listen)
                .await
                .with_context(|| format!("failed to bind the bulk plane on {}", bulk.listen))?;
            let advert = crate::http::BulkAdvert {
                addr: listener.local_addr()?,
                tls: bulk.tls,
                fixed_url: bulk.advertise_url.clone(),
            };
            bulk_advert = Some(advert.clone());
            let scheme = if bulk.tls { "https" } else { "http" };
            println!(
                "diloco-coordinator bulk plane on {scheme}://{}",
                advert.addr
            );
            if !bulk.tls {
                warn!(address = %advert.addr, "the bulk plane is cleartext and unauthenticated: restrict who can reach it (NetworkPolicy)");
            }
            let router = crate::http::bulk_router(
                coordinator.clone(),
                if bulk.auth { credentials.clone() } else { None },
                bulk.tls,
            );
            let app = NormalizePath::trim_trailing_slash(router);
            let bulk_tls = if bulk.tls { tls.clone() } else { None };
            let stopping = coordinator.clone();
            Some(tokio::spawn(crate::listener::serve(
                listener,
                app,
                bulk_tls,
                http_limits,
                async move {
                    stopping.shutdown_requested().await;
                },
            )))
        }
        None => None,
    };

    let metrics = match coordinator.config().metrics.clone() {
        Some(metrics) => {
            let listener = TcpListener::bind(metrics.listen).await.with_context(|| {
                format!("failed to bind the metrics listener on {}", metrics.listen)
            })?;
            println!(
                "diloco-coordinator metrics on http://{}",
                listener.local_addr()?
            );
            let app = NormalizePath::trim_trailing_slash(crate::http::metrics_router(
                coordinator.clone(),
            ));
            let stopping = coordinator.clone();
            Some(tokio::spawn(crate::listener::serve(
                listener,
                app,
                None,
                http_limits,
                async move {
                    stopping.shutdown_requested().await;
                },
            )))
        }
        None => None,
    };

    let ticker = tokio::spawn(tick_forever(coordinator.clone()));
    let mut reloaders = Vec::new();
    if let Some(credentials) = &credentials {
        let stores = [
            ("bearer_token", Some(credentials.worker_tokens.clone())),
            ("admin_token", credentials.admin_tokens.clone()),
        ];
        for (name, store) in stores {
            let Some(store) = store else { continue };
            reloaders.push(tokio::spawn(watch_credential(
                name,
                coordinator.clone(),
                move || {
                    store
                        .reload()
                        .map(|r| r.map(|r| json!({"previous_valid_until": r.previous_valid_until})))
                        .map_err(|e| e.to_string())
                },
            )));
        }
        if let Some(clients) = credentials.clients.clone() {
            reloaders.push(tokio::spawn(watch_credential(
                "clients",
                coordinator.clone(),
                move || {
                    clients
                        .reload()
                        .map(|changed| {
                            changed.map(|c| {
                                json!({"clients": c.count, "added": c.added, "removed": c.removed})
                            })
                        })
                        .map_err(|e| e.to_string())
                },
            )));
        }
    }
    if let Some(tls) = tls.clone() {
        reloaders.push(tokio::spawn(watch_credential(
            "tls_certificate",
            coordinator.clone(),
            move || {
                tls.reload()
                    .map(|changed| changed.then(|| json!({})))
                    .map_err(|e| e.to_string())
            },
        )));
    }
    // forgather strips a trailing `/` from paths; so do we.
    let app = NormalizePath::trim_trailing_slash(crate::http::router(
        coordinator.clone(),
        credentials,
        bulk_advert,
    ));
    let stopping = coordinator.clone();
    let server = crate::listener::serve(listener, app, tls.clone(), http_limits, async move {
        stop_requested(&stopping).await;
    });
    tokio::pin!(server);
    tokio::select! {
        () = &mut server => {}
        () = async {
            coordinator.shutdown_requested().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => warn!("in-flight requests did not finish within {SHUTDOWN_GRACE:?}; stopping anyway"),
    }
    for task in [bulk, metrics, Some(ticker)]
        .into_iter()
        .flatten()
        .chain(reloaders)
    {
        task.abort();
    }
    info!("stopped");
    Ok(())
}

/// The credentials, when authentication is on; a missing or empty token file, or a missing
/// or invalid clients file, stops start-up.
fn load_credentials(coordinator: &Coordinator) -> anyhow::Result<Option<Arc<Credentials>>> {
    let config = coordinator.config();
    let auth = &config.auth;
    let Some(dir) = &auth.token_dir else {
        warn!(
            "authentication is DISABLED (auth.disabled): anyone who can connect can train, read the parameters and shut the coordinator down"
        );
        return Ok(None);
    };
    let worker_tokens = TokenStore::load(dir)
        .with_context(|| format!("cannot load the bearer token from {}", dir.display()))?;
    let admin_tokens = match &auth.admin_token_dir {
        Some(dir) => Some(Arc::new(TokenStore::load(dir).with_context(|| {
            format!("cannot load the admin bearer token from {}", dir.display())
        })?)),
        None => None,
    };
    let clients = match &auth.clients_file {
        Some(path) => Some(Arc::new(
            ClientAllowlist::load(path).context("cannot load auth.clients_file")?,
        )),
        None => None,
    };
    let client_ca = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    if clients.is_some() && !client_ca {
        warn!(
            "auth.clients_file is set but tls.client_ca is not: no client certificate is ever verified, so the list is unused"
        );
    }
    info!(
        token_dir = %dir.display(),
        admin_token_dir = ?auth.admin_token_dir,
        clients_file = ?auth.clients_file,
        "authentication on"
    );
    Ok(Some(Arc::new(Credentials {
        worker_tokens: Arc::new(worker_tokens),
        admin_tokens,
        clients,
    })))
}

/// Re-reads a credential's files every second for as long as the server runs. `reload`
/// returns the audit details of a change, `None` when nothing changed, or an error (the old
/// credential stays in force; the error is logged and audited once, until it clears).
async fn watch_credential<F>(credential: &'static str, coordinator: Arc<Coordinator>, reload: F)
where
    F: Fn() -> Result<Option<serde_json::Value>, String>,
{
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    let mut failing = false;
    loop {
        interval.tick().await;
        match reload() {
            Ok(None) => failing = false,
            Ok(Some(mut details)) => {
                failing = false;
                info!(credential, %details, "credential reloaded");
                details["credential"] = credential.into();
                coordinator
                    .metrics()
                    .credential_reload(credential, "reloaded");
                coordinator.audit(AuditRecord::new("credential_reload").details(details));
            }
            Err(error) => {
                if !failing {
                    // Counted once per failure, like the audit record, not once per second.
                    coordinator
                        .metrics()
                        .credential_reload(credential, "failed");
                    warn!(credential, %error, "credential not reloaded; the old one stays in force");
                    coordinator.audit(
                        AuditRecord::new("credential_reload_failure")
                            .details(json!({"credential": credential, "error": error})),
                    );
                }
                failing = true;
            }
        }
    }
}

async fn tick_forever(coordinator: Arc<Coordinator>) {
    let timeout = coordinator.config().training.heartbeat_timeout_seconds;
    let period = Duration::from_millis((timeout * 1000 / 3).clamp(250, 1000));
    let mut interval = tokio::time::interval(period);
    loop {
        interval.tick().await;
        coordinator.tick();
    }
}

/// Resolves on SIGTERM/SIGINT or a shutdown control action, after saving a checkpoint and
/// releasing the workers waiting for a round.
async fn stop_requested(coordinator: &Arc<Coordinator>) {
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT"),
        _ = async { match terminate.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => info!("SIGTERM"),
        () = coordinator.shutdown_requested() => info!("shutdown requested"),
    }
    let saver = coordinator.clone();
    match tokio::task::spawn_blocking(move || saver.checkpoint_now()).await {
        Ok(Some(round)) => info!(round, "final checkpoint saved"),
        Ok(None) => info!("no final checkpoint (none configured or nothing to save)"),
        Err(error) => warn!(%error, "final checkpoint failed"),
    }
    coordinator.request_shutdown();
}
