//! `diloco-console`: a web view of every `DiLoCoServer` a user may see, with plots, recent
//! audit records and control actions.
//!
//! - **Login the Kubernetes way** ([`session`], [`caller`], [`kube_auth`]): a bearer token,
//!   checked once with a `TokenReview` and forgotten; a session cookie (`HttpOnly`, `Secure`,
//!   `SameSite=Strict`), a CSRF token on every `POST`, an idle timeout. Programs send
//!   `Authorization: Bearer` instead.
//! - **Authorisation by Kubernetes**: a `SubjectAccessReview` on `dilocoservers.diloco.dev`
//!   for every view (`get`, `list`) and action (`patch`).
//! - **A proxy to coordinators** ([`upstream`]): only those of existing `DiLoCoServer`s, over
//!   mTLS with the console's own client certificate; the coordinator's 401/403 is tagged
//!   `x-upstream-auth-failed: 1`.
//! - **The page** ([`routes`]): embedded HTML, CSS and JavaScript; plots drawn as SVG.

pub mod caller;
pub mod error;
pub mod kube_auth;
pub mod rotation;
pub mod routes;
pub mod servers;
pub mod session;
pub mod settings;
pub mod state;
pub mod upstream;

use std::future::Future;

pub use settings::ConsoleSettings;
pub use state::AppState;

/// The console's routes, talking to Kubernetes with `client` (the console's ServiceAccount).
pub fn app(client: kube::Client, settings: ConsoleSettings) -> axum::Router {
    routes::router(AppState::new(client, settings))
}

/// Serves the console on `listener` until `shutdown` completes (requests in flight finish).
pub async fn serve(
    listener: tokio::net::TcpListener,
    client: kube::Client,
    settings: ConsoleSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(client, settings))
        .with_graceful_shutdown(shutdown)
        .await
}
