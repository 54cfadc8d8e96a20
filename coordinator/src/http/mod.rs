//! The HTTP surface: forgather's endpoint paths, JSON fields and status codes, as the contract
//! (`diloco_contract::api`) defines them. Handlers parse requests into contract types, call the
//! round engine and map its [`crate::engine::EngineError`]s to responses ([`ApiError`]).

pub mod api_error;
mod audit;
pub mod authenticate;
mod body_limits;
mod bulk_advert;
mod control;
mod model_def;
mod python_json;
mod tensors;
mod work;
mod workers;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use diloco_contract::api::{self, BULK_PATHS, BULK_URL_HEADER, ErrorBody, OkReply};
use serde::de::DeserializeOwned;
use serde_json::json;

pub use api_error::ApiError;
pub use bulk_advert::BulkAdvert;

use crate::audit::AuditRecord;
use crate::auth::{Credentials, FailureLimiter};
use crate::engine::Coordinator;
use crate::identity::Caller;
use authenticate::{AdminGate, AuthState, remote_addr};
use body_limits::{BodyLimits, read_body_within_limits};

/// What the handlers share: the round engine, and where the bulk plane is (if there is one).
pub struct AppState {
    /// The round engine.
    pub engine: Arc<Coordinator>,
    /// The bulk plane's advert, when the coordinator has a bulk listener.
    pub bulk: Option<BulkAdvert>,
}

/// Shared handler state.
pub type App = Arc<AppState>;

fn bulk_routes() -> Router<App> {
    Router::new()
        .route(api::SUBMIT_PSEUDOGRAD, post(tensors::submit_pseudograd))
        .route(
            api::SUBMIT_FRAGMENT_PSEUDOGRAD,
            post(tensors::submit_fragment),
        )
        .route(api::GLOBAL_PARAMS, get(tensors::global_params))
        // Upload size is enforced while streaming, against limits.max_upload_bytes.
        .layer(DefaultBodyLimit::disable())
}

fn health() -> axum::routing::MethodRouter<App> {
    get(|| async { axum::Json(OkReply::default()) })
}

/// The control plane's routes; with `credentials`, all but `/health` need one (without, as
/// with `auth.disabled`, every caller is the anonymous admin). `/control/*` needs the admin
/// role, and so does `/audit`. With a bulk plane (`bulk`), the bulk paths answer 404 with its URL (after
/// authentication, so only authenticated callers learn it).
pub fn router(
    engine: Arc<Coordinator>,
    credentials: Option<Arc<Credentials>>,
    bulk: Option<BulkAdvert>,
) -> Router {
    let limits = &engine.config().limits;
    let json_limit = limits.max_json_bytes;
    let read_within = Duration::from_secs(limits.request_timeout_seconds);
    let admin = AdminGate {
        forbidden: engine.metrics().forbidden.clone(),
        audit: engine.audit_log(),
    };
    let app = Arc::new(AppState {
        engine: engine.clone(),
        bulk: bulk.clone(),
    });
    let mut uploads = Router::new()
        .route(api::INIT_PARAMS, post(tensors::init_params))
        .layer(DefaultBodyLimit::disable());
    match bulk {
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
        .route(api::HEALTH, health())
        .route(api::REGISTER, post(workers::register))
        .route(api::HEARTBEAT, post(workers::heartbeat))
        .route(api::DEREGISTER, post(workers::deregister))
        .route(
            api::KNOWN_WORKERS,
            get(|State(app): State<App>| async move { axum::Json(app.engine.known_workers()) }),
        )
        .route(
            api::STATUS,
            get(|State(app): State<App>| async move { axum::Json(app.engine.status()) }),
        )
        .route(
            api::INFO,
            get(|State(app): State<App>| async move { axum::Json(app.engine.info()) }),
        )
        .route(api::MODEL_DEF, get(model_def::model_def))
        .route(
            &format!("{}{{action}}", api::CONTROL_PREFIX),
            post(control::control).layer(axum::middleware::from_fn_with_state(
                admin.clone(),
                authenticate::require_admin,
            )),
        )
        .route(
            api::AUDIT,
            get(audit::audit_tail).layer(axum::middleware::from_fn_with_state(
                admin,
                authenticate::require_admin,
            )),
        )
        .route(api::METRICS, get(metrics))
        .route(api::STATS_HISTORY, get(work::stats_history))
        .route(api::DATASETS_REGISTER, post(work::register_dataset))
        .route(api::WORK_REQUEST, post(work::request_unit))
        .route(api::WORK_COMPLETE, post(work::complete_unit))
        .route(api::WORK_QUEUES, get(work::queues))
        .route(api::WORK_QUEUE, get(work::queue))
        .layer(DefaultBodyLimit::max(json_limit))
        .layer(axum::middleware::from_fn_with_state(
            BodyLimits {
                bytes: json_limit,
                read_within,
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
        Some(credentials) => with_auth(router, &engine, credentials),
        None => router.layer(axum::middleware::from_fn(authenticate::anonymous)),
    }
    .with_state(app)
}

/// 404 for a bulk path on the control plane, with the bulk URL in a header and the body.
fn bulk_elsewhere(advert: &BulkAdvert, headers: &HeaderMap) -> Response {
    let url = advert.url(headers);
    let body = ErrorBody {
        error: format!("tensor transfers are served on the bulk plane at {url}"),
        kind: None,
        bulk_url: Some(url.clone()),
    };
    let mut response = (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&url) {
        response.headers_mut().insert(BULK_URL_HEADER, value);
    }
    response
}

/// The bulk plane's routes: the bulk paths and `/health`, nothing else. With `credentials`
/// they need the control plane's credentials (and uploads are bound to the identity that
/// registered the worker); without, nobody can be told apart. A cleartext bulk plane never
/// should see a bearer token, and counts (and logs) any it does.
pub fn bulk_router(
    engine: Arc<Coordinator>,
    credentials: Option<Arc<Credentials>>,
    tls: bool,
) -> Router {
    let app = Arc::new(AppState {
        engine: engine.clone(),
        bulk: None,
    });
    let router = bulk_routes()
        .route(api::HEALTH, health())
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
        Some(credentials) => with_auth(router, &engine, credentials),
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
pub fn metrics_router(engine: Arc<Coordinator>) -> Router {
    let app = Arc::new(AppState { engine, bulk: None });
    Router::new()
        .route(api::METRICS, get(metrics))
        .route(api::HEALTH, health())
        .fallback(|uri: axum::http::Uri| async move { not_served_on("the metrics listener", &uri) })
        .with_state(app)
}

async fn flag_cleartext_bearer(
    State(app): State<App>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.headers().contains_key(header::AUTHORIZATION) {
        app.engine.metrics().cleartext_bearer.inc();
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
fn with_auth(
    router: Router<App>,
    engine: &Coordinator,
    credentials: Arc<Credentials>,
) -> Router<App> {
    let limits = &engine.config().limits;
    let auth = Arc::new(AuthState::new(
        credentials,
        FailureLimiter::new(
            limits.auth_failures_per_window,
            Duration::from_secs(limits.auth_failure_window_seconds),
        ),
        engine.metrics(),
        engine.audit_log(),
    ));
    router.layer(axum::middleware::from_fn_with_state(
        auth,
        authenticate::authenticate,
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
fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(text)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Passes `error` on, recording it in the audit log and metrics first when it is a 403 (a
/// worker id outside the caller's certificate, a worker someone else registered).
fn audit_if_forbidden(app: &App, extensions: &Extensions, path: &str, error: ApiError) -> ApiError {
    if error.status == StatusCode::FORBIDDEN {
        app.engine.metrics().forbidden.inc();
        app.engine.audit(
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

async fn metrics(State(app): State<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.engine.metrics().render(),
    )
        .into_response()
}
