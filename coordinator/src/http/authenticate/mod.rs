//! Authentication of HTTP requests, per listener: the credential a request carries becomes a
//! [`Caller`] in its extensions ([`crate::auth::Credentials`] says which credentials count and
//! in which order), or the request is refused with 401, audited and counted. An address with
//! too many recent failures is refused (429) before any token it sends is compared.
//!
//! The middleware holds only what it needs: the credentials, its listener's failure limiter,
//! its counters and the audit log, never the round engine.

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use diloco_contract::api::{
    AUTH_REALM, AuthRefusalBody, BEARER_CHALLENGE, BEARER_SCHEME, ErrorKind, HEALTH,
};
use jiff::Timestamp;
use prometheus_client::metrics::counter::Counter;
use serde_json::json;

use super::api_error::ApiError;
use crate::audit::{AuditLog, AuditRecord, bounded};
use crate::auth::{Credentials, FailureLimiter};
use crate::identity::{Caller, Role};
use crate::metrics::Metrics;
use crate::tls::ClientCertificate;

/// The remote address of a request, when the server recorded it.
pub fn remote_addr(request_extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    request_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
}

/// What one listener's authentication middleware needs.
pub struct AuthState {
    /// The accepted credentials.
    pub credentials: Arc<Credentials>,
    /// Failures per address, on this listener only.
    pub limiter: FailureLimiter,
    /// Counts refused credentials (`diloco_auth_failures_total`).
    pub failures: Counter,
    /// Counts requests refused by the limiter (`diloco_auth_rate_limited_total`).
    pub rate_limited: Counter,
    /// Where refusals are recorded.
    pub audit: Arc<AuditLog>,
}

impl AuthState {
    /// The state of a listener whose failures are limited by `limiter`.
    pub fn new(
        credentials: Arc<Credentials>,
        limiter: FailureLimiter,
        metrics: &Metrics,
        audit: Arc<AuditLog>,
    ) -> Self {
        Self {
            credentials,
            limiter,
            failures: metrics.auth_failures.clone(),
            rate_limited: metrics.auth_rate_limited.clone(),
            audit,
        }
    }
}

/// What the admin-only routes' middleware needs.
#[derive(Clone)]
pub struct AdminGate {
    /// Counts refused non-admins (`diloco_forbidden_total`).
    pub forbidden: Counter,
    /// Where refusals are recorded.
    pub audit: Arc<AuditLog>,
}

/// A refusal with forgather's challenge: `WWW-Authenticate` and the realm in the body.
fn refusal(status: StatusCode, reason: &str) -> Response {
    let body = AuthRefusalBody {
        error: ApiError::new(status, reason).kind(ErrorKind::Auth).body(),
        realm: AUTH_REALM.to_string(),
    };
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(BEARER_CHALLENGE),
    );
    response
}

/// Why a request without a usable bearer token is refused (the 401's message).
const MISSING: &str = "missing bearer token";
const MALFORMED: &str = "malformed Authorization header: expected `Bearer <token>`";
const INVALID: &str = "invalid or expired bearer token";

/// A refusal's reason as the audit log records it: a code for the bearer refusals, so that
/// the log never holds the word `bearer` (forgather's test of a log free of credentials, §6
/// item 37), and the bounded text for certificate refusals.
fn audited_reason(reason: &str) -> String {
    match reason {
        MISSING => "missing_credential".into(),
        MALFORMED => "malformed_authorization".into(),
        INVALID => "invalid_token".into(),
        other => bounded(other),
    }
}

/// Middleware: every path but `/health` needs a credential; the [`Caller`] it makes is put
/// into the request's extensions.
pub async fn authenticate(
    State(auth): State<Arc<AuthState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let AuthState {
        credentials,
        limiter,
        failures,
        rate_limited,
        audit,
    } = &*auth;
    if request.uri().path() == HEALTH {
        return next.run(request).await;
    }
    let remote = remote_addr(request.extensions());
    let refused = |reason: &str, path: &str| {
        failures.inc();
        audit.record(
            AuditRecord::new("auth_failure")
                .remote(remote)
                .details(json!({"path": bounded(path), "reason": audited_reason(reason)})),
        );
        refusal(StatusCode::UNAUTHORIZED, reason)
    };
    // A certificate cannot be guessed, so it is not subject to the failure limiter; a listed
    // client keeps working from an address someone else is guessing tokens from.
    if let Some(certificate) = request.extensions().get::<ClientCertificate>() {
        return match credentials.certificate_caller(certificate) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                next.run(request).await
            }
            Err(reason) => refused(&reason, request.uri().path()),
        };
    }
    let ip = remote.map(|a| a.ip());
    let now = Instant::now();
    if let Some(retry_after) = ip.and_then(|ip| limiter.blocked_for(ip, now)) {
        // Refused before the token is even looked at. Not audited one by one: a flood would
        // only flood the log.
        rate_limited.inc();
        let mut response = refusal(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("too many failed authentications from this address; retry in {retry_after} s"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return response;
    }
    let caller = match request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::to_str)
    {
        None => Err(MISSING),
        Some(Err(_)) => Err(MALFORMED),
        Some(Ok(value)) => match bearer_token(value) {
            None => Err(MALFORMED),
            Some(token) => credentials
                .token_caller(token, Timestamp::now())
                .ok_or(INVALID),
        },
    };
    match caller {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(reason) => {
            if let Some(ip) = ip {
                limiter.record_failure(ip, now);
            }
            refused(reason, request.uri().path())
        }
    }
}

/// The token of `Bearer <token>`, the scheme in any case (`bearer`, `BEARER`), as RFC 9110
/// and forgather read it; `None` for another scheme or no token.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case(BEARER_SCHEME) && !token.is_empty()).then_some(token)
}

/// Middleware for a listener without authentication (`auth.disabled`): everyone is the
/// anonymous admin, so handlers always find a [`Caller`].
pub async fn anonymous(mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(Caller::anonymous());
    next.run(request).await
}

/// Middleware for admin-only routes (`/control/*`): other callers get 403, audited.
pub async fn require_admin(
    State(gate): State<AdminGate>,
    request: Request,
    next: Next,
) -> Response {
    let caller = request.extensions().get::<Caller>();
    if caller.is_some_and(Caller::is_admin) {
        return next.run(request).await;
    }
    let identity = caller.map(|c| c.identity().to_string());
    let reason = format!(
        "{} requires the admin role (the admin token, or a client certificate listed as admin); \
         {} has the {} role",
        bounded(request.uri().path()),
        identity.as_deref().unwrap_or("this caller"),
        caller.map_or(Role::Worker, Caller::role),
    );
    gate.forbidden.inc();
    gate.audit.record(
        AuditRecord::new("forbidden")
            .remote(remote_addr(request.extensions()))
            .caller(identity)
            .details(
                json!({"path": bounded(request.uri().path()), "reason": "admin role required"}),
            ),
    );
    ApiError::forbidden(reason).into_response()
}
