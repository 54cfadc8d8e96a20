//! The HTTP surface: forgather's endpoint paths, JSON fields and status codes.

mod body_limits;
mod tensors;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::api_error::ApiError;
use crate::audit::AuditRecord;
use crate::auth::{AuthState, Credentials, FailureLimiter, remote_addr};
use crate::engine::{ControlAction, Coordinator};
use crate::identity::Caller;
use body_limits::{BodyLimits, read_body_within_limits};

/// Shared handler state.
pub type App = Arc<Coordinator>;

/// The bulk plane's paths (tensor uploads and downloads), as in forgather.
pub const BULK_PATHS: [&str; 3] = [
    "/submit_pseudograd",
    "/submit_fragment_pseudograd",
    "/global_params",
];

/// Header advertising the bulk plane's URL, as in forgather.
pub const BULK_URL_HEADER: &str = "x-forgather-bulk-url";

/// Where workers find the bulk plane.
#[derive(Clone, Debug)]
pub struct BulkAdvert {
    /// The bulk listener's bound address.
    pub addr: SocketAddr,
    /// Whether it speaks TLS.
    pub tls: bool,
    /// A fixed URL to advertise instead (`bulk.advertise_url`, e.g. the bulk Service's DNS
    /// name when a Service sits in front of the pod).
    pub fixed_url: Option<String>,
}

impl BulkAdvert {
    /// The URL a worker should use: the bound host, or for a wildcard bind the host the
    /// worker itself used to reach the control plane (its `Host` header).
    pub fn url(&self, headers: &HeaderMap) -> String {
        if let Some(url) = &self.fixed_url {
            return url.clone();
        }
        let scheme = if self.tls { "https" } else { "http" };
        let port = self.addr.port();
        let ip = self.addr.ip();
        let host = if ip.is_unspecified() {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
                .map(|a| a.host().to_string())
                .unwrap_or_else(|| "127.0.0.1".into())
        } else if ip.is_ipv6() {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        format!("{scheme}://{host}:{port}")
    }
}

fn bulk_routes() -> Router<App> {
    Router::new()
        .route("/submit_pseudograd", post(tensors::submit_pseudograd))
        .route(
            "/submit_fragment_pseudograd",
            post(tensors::submit_fragment),
        )
        .route("/global_params", get(tensors::global_params))
        // Upload size is enforced while streaming, against limits.max_upload_bytes.
        .layer(DefaultBodyLimit::disable())
}

/// The control plane's routes; with `credentials`, all but `/health` need one (without, as
/// with `auth.disabled`, every caller is the anonymous admin). `/control/*` needs the admin
/// role. With a bulk plane, the bulk paths answer 404 with its URL (after authentication, so
/// only authenticated callers learn it).
pub fn router(app: App, credentials: Option<Arc<Credentials>>) -> Router {
    let json_limit = app.config().limits.max_json_bytes;
    let mut uploads = Router::new()
        .route("/init_params", post(tensors::init_params))
        .layer(DefaultBodyLimit::disable());
    match app.bulk_advert() {
        None => uploads = uploads.merge(bulk_routes()),
        Some(advert) => {
            let advert = Arc::new(advert);
            for path in BULK_PATHS {
                let advert = advert.clone();
                uploads = uploads.route(
                    path,
                    any(move |headers: HeaderMap| async move { bulk_elsewhere(&advert, &headers) }),
                );
            }
        }
    }
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
        .route(
            "/control/{action}",
            post(control).layer(axum::middleware::from_fn_with_state(
                app.clone(),
                crate::auth::require_admin,
            )),
        )
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::from_fn_with_state(
            BodyLimits {
                bytes: json_limit,
                read_within: Duration::from_secs(app.config().limits.request_timeout_seconds),
            },
            read_body_within_limits,
        ))
        .merge(uploads)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "Unknown endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed on this endpoint",
            )
        });
    match credentials {
        Some(credentials) => with_auth(router, &app, credentials),
        None => router.layer(axum::middleware::from_fn(crate::auth::anonymous)),
    }
    .with_state(app)
}

/// 404 for a bulk path on the control plane, with the bulk URL in a header and the body.
fn bulk_elsewhere(advert: &BulkAdvert, headers: &HeaderMap) -> Response {
    let url = advert.url(headers);
    let mut response = (
        StatusCode::NOT_FOUND,
        axum::Json(json!({
            "error": format!("tensor transfers are served on the bulk plane at {url}"),
            "bulk_url": url,
        })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&url) {
        response.headers_mut().insert(BULK_URL_HEADER, value);
    }
    response
}

/// The bulk plane's routes: the bulk paths and `/health`, nothing else. With `credentials`
/// they need the control plane's credentials (and uploads are bound to the identity that
/// registered the worker); without, nobody can be told apart. A cleartext bulk plane never
/// should see a bearer token, and counts (and logs) any it does.
pub fn bulk_router(app: App, credentials: Option<Arc<Credentials>>, tls: bool) -> Router {
    let router = bulk_routes()
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .fallback(|uri: axum::http::Uri| async move { not_served_on("the bulk plane", &uri) });
    let router = if credentials.is_none() && !tls {
        router.layer(axum::middleware::from_fn_with_state(
            app.clone(),
            flag_cleartext_bearer,
        ))
    } else {
        router
    };
    match credentials {
        Some(credentials) => with_auth(router, &app, credentials),
        None => router,
    }
    .with_state(app)
}

/// 404 for a path another listener serves.
fn not_served_on(listener: &str, uri: &axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("Endpoint {} is not served on {listener}", uri.path()),
    )
}

/// The metrics listener's routes: `/metrics` and `/health`, cleartext and open, for
/// Prometheus and probes. Nothing else, so no credential or tensor ever crosses it.
pub fn metrics_router(app: App) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .fallback(|uri: axum::http::Uri| async move { not_served_on("the metrics listener", &uri) })
        .with_state(app)
}

async fn flag_cleartext_bearer(
    State(app): State<App>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.headers().contains_key(header::AUTHORIZATION) {
        app.metrics().cleartext_bearer.inc();
        tracing::warn!(
            path = request.uri().path(),
            "a client sent an Authorization header to the cleartext bulk plane; its credential \
             crossed the network in clear and should be rotated"
        );
    }
    next.run(request).await
}

/// Puts authentication in front of `router`, with a failure limiter of its own: a listener's
/// failures never block its callers on another listener.
fn with_auth(router: Router<App>, app: &App, credentials: Arc<Credentials>) -> Router<App> {
    let limits = &app.config().limits;
    let auth = Arc::new(AuthState {
        coordinator: app.clone(),
        credentials,
        limiter: FailureLimiter::new(
            limits.auth_failures_per_window,
            Duration::from_secs(limits.auth_failure_window_seconds),
        ),
    });
    router.layer(axum::middleware::from_fn_with_state(
        auth,
        crate::auth::authenticate,
    ))
}

/// The caller authentication put into the request; refused when there is none (a route
/// reached without authentication is a bug, and fails closed).
fn caller(extensions: &Extensions) -> Result<&Caller, ApiError> {
    extensions
        .get::<Caller>()
        .ok_or_else(|| ApiError::internal("the request was not authenticated"))
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

/// Passes `error` on, recording it in the audit log and metrics first when it is a 403 from
/// the engine (a worker id outside the caller's certificate, a worker someone else registered).
fn audit_if_forbidden(app: &App, extensions: &Extensions, path: &str, error: ApiError) -> ApiError {
    if error.status == StatusCode::FORBIDDEN {
        app.metrics().forbidden.inc();
        app.audit(
            audit_record("forbidden", extensions)
                .details(json!({"path": path, "reason": crate::audit::bounded(&error.message)})),
        );
    }
    error
}

/// An audit record of `event` stamped with the request's remote address and caller.
fn audit_record(event: &'static str, extensions: &Extensions) -> AuditRecord {
    AuditRecord::new(event)
        .remote(remote_addr(extensions))
        .caller(extensions.get::<Caller>().map(|c| c.identity().to_string()))
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
    // Recorded before the action runs, so a failing action is recorded too.
    app.audit(
        audit_record("control", &extensions)
            .details(json!({"action": name, "body": action.audit_summary(&body)})),
    );
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
