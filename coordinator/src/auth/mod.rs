//! Bearer-token authentication: the tokens ([`tokens`]) and, per listener, a limit on failed
//! attempts ([`limiter`]). An address over its limit is refused (429) before any token it sends
//! is compared.

pub mod limiter;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::json;

pub use limiter::FailureLimiter;
pub use tokens::{TokenError, TokenStore};

use crate::api_error::ApiError;
use crate::audit::AuditRecord;
use crate::engine::Coordinator;
use crate::tls::ClientCertificate;

/// Who made an authenticated request, for audit records: `bearer`, or a client
/// certificate's subject.
#[derive(Clone, Debug)]
pub struct Peer(pub String);

/// The remote address of a request, when the server recorded it.
pub fn remote_addr(request_extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    request_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
}

/// What the authentication middleware needs.
pub struct AuthState {
    /// For metrics and audit records.
    pub coordinator: Arc<Coordinator>,
    /// The accepted tokens.
    pub tokens: Arc<TokenStore>,
    /// Failures per address, on this listener only.
    pub limiter: FailureLimiter,
}

fn refusal(status: StatusCode, reason: &str) -> Response {
    let mut response = ApiError::new(status, reason).kind("auth").into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"diloco\""),
    );
    response
}

/// Middleware: every path but `/health` needs a valid bearer token. An address with too many
/// recent failures gets 429 (with `Retry-After`) before its token is even compared.
pub async fn require_bearer(
    State(auth): State<Arc<AuthState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let AuthState {
        coordinator,
        tokens,
        limiter,
    } = &*auth;
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    // A client certificate verified against `tls.client_ca` during the handshake.
    if let Some(subject) = request
        .extensions()
        .get::<ClientCertificate>()
        .map(|c| c.subject.clone())
    {
        request.extensions_mut().insert(Peer(subject));
        return next.run(request).await;
    }
    let remote = remote_addr(request.extensions());
    let ip = remote.map(|a| a.ip());
    let now = Instant::now();
    if let Some(retry_after) = ip.and_then(|ip| limiter.blocked_for(ip, now)) {
        // Refused before the token is looked at, so guessing cannot go on at full speed. Not
        // audited one by one: a flood would only flood the log.
        coordinator.metrics().auth_rate_limited.inc();
        let mut response = refusal(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("too many failed authentications from this address; retry in {retry_after} s"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return response;
    }
    let presented = request.headers().get(header::AUTHORIZATION);
    let failure = match presented.map(HeaderValue::to_str) {
        None => Some("missing bearer token"),
        Some(Err(_)) => Some("malformed Authorization header: expected `Bearer <token>`"),
        Some(Ok(value)) => match value.strip_prefix("Bearer ") {
            None => Some("malformed Authorization header: expected `Bearer <token>`"),
            Some(token) if tokens.accepts(token.trim(), Timestamp::now()) => None,
            Some(_) => Some("invalid or expired bearer token"),
        },
    };
    let Some(reason) = failure else {
        request.extensions_mut().insert(Peer("bearer".into()));
        return next.run(request).await;
    };
    coordinator.metrics().auth_failures.inc();
    if let Some(ip) = ip {
        limiter.record_failure(ip, now);
    }
    coordinator.audit(
        AuditRecord::new("auth_failure")
            .remote(remote)
            .details(json!({"path": request.uri().path(), "reason": reason})),
    );
    refusal(StatusCode::UNAUTHORIZED, reason)
}
