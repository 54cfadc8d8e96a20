//! Authentication: turning a request's credential into a [`Caller`], per listener.
//!
//! Credentials, in the order they are checked:
//! 1. a client certificate verified during the TLS handshake (against `tls.client_ca`): with
//!    `auth.clients_file` it authenticates only if its common name is listed there, with the
//!    listed role; without one it is a worker;
//! 2. `Authorization: Bearer <token>`: the admin token (`auth.admin_token_dir`) makes an admin,
//!    the worker token (`auth.token_dir`) a worker.
//!
//! An address with too many recent failures is refused (429) before any token it sends is
//! compared. What a caller may do once known is in [`crate::identity`].

pub mod clients;
pub mod limiter;
#[cfg(test)]
mod tests;
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

pub use clients::ClientAllowlist;
pub use limiter::FailureLimiter;
pub use tokens::{TokenError, TokenStore};

use crate::api_error::ApiError;
use crate::audit::{AuditRecord, bounded};
use crate::engine::Coordinator;
use crate::identity::{Caller, Role};
use crate::tls::ClientCertificate;

/// Every credential the coordinator accepts, shared by its listeners.
pub struct Credentials {
    /// Worker bearer tokens (`auth.token_dir`).
    pub worker_tokens: Arc<TokenStore>,
    /// Admin bearer tokens (`auth.admin_token_dir`), if configured.
    pub admin_tokens: Option<Arc<TokenStore>>,
    /// The client certificates allowed (`auth.clients_file`), if configured.
    pub clients: Option<Arc<ClientAllowlist>>,
}

impl Credentials {
    /// The caller a verified client certificate makes, or why it is refused.
    pub fn certificate_caller(&self, certificate: &ClientCertificate) -> Result<Caller, String> {
        let Some(cn) = certificate.common_name.as_deref() else {
            return Err(format!(
                "client certificate {} has no subject common name (CN) to identify it by",
                bounded(&certificate.subject)
            ));
        };
        match &self.clients {
            None => Ok(Caller::certificate(cn, Role::Worker)),
            Some(clients) => clients
                .role_of(cn)
                .map(|role| Caller::certificate(cn, role))
                .ok_or_else(|| {
                    format!(
                        "client certificate CN={} is not an allowed client",
                        bounded(cn)
                    )
                }),
        }
    }

    /// The caller a bearer token makes, if any token accepts it.
    pub fn token_caller(&self, presented: &str, now: Timestamp) -> Option<Caller> {
        if self
            .admin_tokens
            .as_ref()
            .is_some_and(|admin| admin.accepts(presented, now))
        {
            return Some(Caller::admin_token());
        }
        self.worker_tokens
            .accepts(presented, now)
            .then(Caller::worker_token)
    }
}

/// The remote address of a request, when the server recorded it.
pub fn remote_addr(request_extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    request_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
}

/// What one listener's authentication middleware needs.
pub struct AuthState {
    /// For metrics and audit records.
    pub coordinator: Arc<Coordinator>,
    /// The accepted credentials.
    pub credentials: Arc<Credentials>,
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

/// Middleware: every path but `/health` needs a credential; the [`Caller`] it makes is put
/// into the request's extensions.
pub async fn authenticate(
    State(auth): State<Arc<AuthState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let AuthState {
        coordinator,
        credentials,
        limiter,
    } = &*auth;
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let remote = remote_addr(request.extensions());
    let refused = |reason: &str, path: &str| {
        coordinator.metrics().auth_failures.inc();
        coordinator.audit(
            AuditRecord::new("auth_failure")
                .remote(remote)
                .details(json!({"path": bounded(path), "reason": reason})),
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
    let malformed = "malformed Authorization header: expected `Bearer <token>`";
    let caller = match request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::to_str)
    {
        None => Err("missing bearer token"),
        Some(Err(_)) => Err(malformed),
        Some(Ok(value)) => match value.strip_prefix("Bearer ") {
            None => Err(malformed),
            Some(token) => credentials
                .token_caller(token.trim(), Timestamp::now())
                .ok_or("invalid or expired bearer token"),
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

/// Middleware for a listener without authentication (`auth.disabled`): everyone is the
/// anonymous admin, so handlers always find a [`Caller`].
pub async fn anonymous(mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(Caller::anonymous());
    next.run(request).await
}

/// Middleware for admin-only routes (`/control/*`): other callers get 403, audited.
pub async fn require_admin(
    State(coordinator): State<Arc<Coordinator>>,
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
    coordinator.metrics().forbidden.inc();
    coordinator.audit(
        AuditRecord::new("forbidden")
            .remote(remote_addr(request.extensions()))
            .caller(identity)
            .details(
                json!({"path": bounded(request.uri().path()), "reason": "admin role required"}),
            ),
    );
    ApiError::forbidden(reason).into_response()
}
