//! The HTTP surface: forgather's endpoint paths, JSON fields and status codes.

mod tensors;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{Extensions, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::audit::AuditRecord;
use crate::auth::{AuthState, FailureLimiter, Peer, TokenStore, remote_addr, require_bearer};
use crate::engine::{ControlAction, Coordinator};

/// Shared handler state.
pub type App = Arc<Coordinator>;

/// Every route of the coordinator; with `tokens`, all but `/health` need a bearer token.
pub fn router(app: App, tokens: Option<Arc<TokenStore>>) -> Router {
    let json_limit = app.config().limits.max_json_bytes;
    let uploads = Router::new()
        .route("/submit_pseudograd", post(tensors::submit_pseudograd))
        .route(
            "/submit_fragment_pseudograd",
            post(tensors::submit_fragment),
        )
        .route("/init_params", post(tensors::init_params))
        // Upload size is enforced while streaming, against limits.max_upload_bytes.
        .layer(DefaultBodyLimit::disable());
    let router = Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/register", post(workers::register))
        .route("/heartbeat", post(workers::heartbeat))
        .route("/deregister", post(workers::deregister))
        .route(
            "/known_workers",
            get(|State(app): State<App>| async move { axum::Json(app.known_workers()) }),
        )
        .route(
            "/status",
            get(|State(app): State<App>| async move { axum::Json(app.status()) }),
        )
        .route(
            "/info",
            get(|State(app): State<App>| async move { axum::Json(app.info()) }),
        )
        .route("/global_params", get(tensors::global_params))
        .route("/control/{action}", post(control))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(json_limit))
        .merge(uploads)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "Unknown endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed on this endpoint",
            )
        });
    let router = match tokens {
        Some(tokens) => {
            let limits = &app.config().limits;
            let auth = Arc::new(AuthState {
                coordinator: app.clone(),
                tokens,
                limiter: FailureLimiter::new(
                    limits.auth_failures_per_window,
                    Duration::from_secs(limits.auth_failure_window_seconds),
                ),
            });
            router.layer(axum::middleware::from_fn_with_state(auth, require_bearer))
        }
        None => router,
    };
    router.with_state(app)
}

/// Parses a JSON body; an empty body counts as `{}` where `T` allows it.
fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(text)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// An audit record of `event` stamped with the request's remote address and peer.
fn audit_record(event: &'static str, extensions: &Extensions) -> AuditRecord {
    AuditRecord::new(event)
        .remote(remote_addr(extensions))
        .peer(extensions.get::<Peer>().map(|p| p.0.clone()))
}

async fn control(
    State(app): State<App>,
    Path(name): Path<String>,
    extensions: Extensions,
    body: Bytes,
) -> Result<Response, ApiError> {
    let action = ControlAction::from_name(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Unknown control action {name}"),
        )
    })?;
    let body: Value = parse_json(&body)?;
    // Control bodies carry settings and worker ids, never credentials.
    app.audit(audit_record("control", &extensions).details(json!({"action": name, "body": body})));
    let reply = tokio::task::spawn_blocking(move || app.control(action, &body))
        .await
        .map_err(|e| ApiError::internal(format!("control action failed: {e}")))??;
    Ok(axum::Json(reply).into_response())
}

async fn metrics(State(app): State<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics().render(),
    )
        .into_response()
}
