//! The console's HTTP surface: the embedded page, the JSON API of
//! [`diloco_contract::console`], health, and the headers every reply carries.

mod actions;
mod assets;
mod session;
mod views;

use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use diloco_contract::console::{API_PREFIX, LOGIN, LOGOUT, SERVERS, SESSION};

use crate::error::ApiError;
use crate::state::AppState;

/// The largest request body accepted (a login or a control action's JSON).
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// How long `/readyz` waits for the Kubernetes API.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// The page may load only its own script, style and data; no inline script, no `eval`, no
/// other origin, never inside a frame.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; \
     frame-ancestors 'none'; base-uri 'none'";

/// Every route of the console.
pub fn router(state: AppState) -> Router {
    let server = |suffix: &str| format!("{SERVERS}/{{namespace}}/{{name}}{suffix}");
    let api = Router::new()
        .route(LOGIN, post(session::login))
        .route(LOGOUT, post(session::logout))
        .route(SESSION, get(session::current))
        .route(SERVERS, get(views::list))
        .route(&server(""), get(views::summary))
        .route(&server("/status"), get(views::status))
        .route(&server("/history"), get(views::history))
        .route(&server("/audit"), get(views::audit))
        .route(&server("/control/{action}"), post(actions::control))
        .route(&server("/rotate/{what}"), post(actions::rotate));
    Router::new()
        .merge(api)
        .merge(assets::routes())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such page or API route")
}

/// Ready once the Kubernetes API answers: without it nobody can sign in.
async fn ready(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(READY_TIMEOUT, state.client.apiserver_version()).await {
        Ok(Ok(_)) => "ok".into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the Kubernetes API does not answer",
        )
            .into_response(),
    }
}

/// Framing, sniffing and referrer protection on everything; the CSP on everything (a JSON
/// reply opened as a page runs nothing either); API replies are never stored.
async fn security_headers(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with(API_PREFIX);
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    let cache = if api { "no-store" } else { "no-cache" };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

#[cfg(test)]
mod tests;
