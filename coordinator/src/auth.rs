//! Bearer-token authentication.
//!
//! Tokens are read from a directory laid out like the mounted Kubernetes Secret the operator
//! creates: `token` (the current token), and during a rotation `previous-token` with
//! `previous-valid-until` (RFC 3339): the previous token keeps working until then. The files
//! are re-read every second and a change takes effect without a restart. Tokens are compared
//! as SHA-256 digests in constant time; only digests are kept in memory after loading.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api_error::ApiError;
use crate::audit::AuditRecord;
use crate::engine::Coordinator;
use crate::tls::ClientCertificate;

/// Why the tokens could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} is empty")]
    Empty(PathBuf),
}

type TokenDigest = [u8; 32];

#[derive(Clone, PartialEq, Eq)]
struct Tokens {
    current: TokenDigest,
    previous: Option<(TokenDigest, Option<Timestamp>)>,
}

/// The currently valid tokens, reloadable from their directory.
pub struct TokenStore {
    dir: PathBuf,
    tokens: RwLock<Tokens>,
}

/// What a reload found.
#[derive(Debug, PartialEq, Eq)]
pub struct Reloaded {
    /// A previous token is accepted, until this time.
    pub previous_valid_until: Option<String>,
}

impl TokenStore {
    /// Loads the tokens in `dir`; the `token` file must exist and not be empty.
    pub fn load(dir: &Path) -> Result<Self, TokenError> {
        let tokens = read_tokens(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            tokens: RwLock::new(tokens),
        })
    }

    /// Re-reads the files; `Some` when the accepted tokens changed. A read error keeps the
    /// tokens in force (a rotation in progress may briefly remove files).
    pub fn reload(&self) -> Result<Option<Reloaded>, TokenError> {
        let fresh = read_tokens(&self.dir)?;
        let mut tokens = self.tokens.write().unwrap_or_else(PoisonError::into_inner);
        if *tokens == fresh {
            return Ok(None);
        }
        let previous_valid_until = fresh
            .previous
            .as_ref()
            .and_then(|(_, until)| until.map(|t| t.to_string()));
        *tokens = fresh;
        Ok(Some(Reloaded {
            previous_valid_until,
        }))
    }

    /// Whether `presented` is the current token, or the previous one before its deadline.
    pub fn accepts(&self, presented: &str, now: Timestamp) -> bool {
        let digest = digest(presented.as_bytes());
        let tokens = self.tokens.read().unwrap_or_else(PoisonError::into_inner);
        let current: bool = digest.ct_eq(&tokens.current).into();
        let previous = tokens.previous.as_ref().is_some_and(|(previous, until)| {
            let matches: bool = digest.ct_eq(previous).into();
            matches && until.is_some_and(|until| now < until)
        });
        current | previous
    }
}

fn digest(bytes: &[u8]) -> TokenDigest {
    Sha256::digest(bytes).into()
}

fn read_tokens(dir: &Path) -> Result<Tokens, TokenError> {
    let read = |name: &str| -> Result<Option<String>, TokenError> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TokenError::Read { path, source }),
        }
    };
    let token_path = dir.join("token");
    let current = read("token")?
        .ok_or_else(|| TokenError::Read {
            path: token_path.clone(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
        .and_then(|t| {
            if t.is_empty() {
                Err(TokenError::Empty(token_path.clone()))
            } else {
                Ok(t)
            }
        })?;
    let previous = read("previous-token")?
        .filter(|t| !t.is_empty())
        .map(|t| -> Result<_, TokenError> {
            // Without a readable deadline the previous token is not accepted at all.
            let until = read("previous-valid-until")?.and_then(|u| u.parse::<Timestamp>().ok());
            Ok((digest(t.as_bytes()), until))
        })
        .transpose()?;
    Ok(Tokens {
        current: digest(current.as_bytes()),
        previous,
    })
}

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

/// Counts failed authentications per IP address in fixed windows, to slow down guessing.
pub struct FailureLimiter {
    allowed: u32,
    window: Duration,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

/// Addresses tracked at most; beyond this, expired windows are dropped first, then all.
const LIMITER_ADDRESSES: usize = 10_000;

impl FailureLimiter {
    /// `allowed` failures per `window` and address.
    pub fn new(allowed: u32, window: Duration) -> Self {
        Self {
            allowed,
            window,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `ip` may try again, if it is over its allowance.
    pub fn blocked_for(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let (start, count) = windows.get(&ip)?;
        let end = *start + self.window;
        (*count >= self.allowed && now < end).then(|| (end - now).as_secs().max(1))
    }

    /// Records a failure from `ip`.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if windows.len() >= LIMITER_ADDRESSES && !windows.contains_key(&ip) {
            let window = self.window;
            windows.retain(|_, (start, _)| now < *start + window);
            if windows.len() >= LIMITER_ADDRESSES {
                windows.clear();
            }
        }
        let entry = windows.entry(ip).or_insert((now, 0));
        if now >= entry.0 + self.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }
}

/// What the authentication middleware needs.
pub struct AuthState {
    /// For metrics and audit records.
    pub coordinator: Arc<Coordinator>,
    /// The accepted tokens.
    pub tokens: Arc<TokenStore>,
    /// Failures per address.
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
/// recent failures gets 429 (with `Retry-After`) instead of another try.
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
    let remote = remote_addr(request.extensions());
    let now = Instant::now();
    if let Some(ip) = remote.map(|a| a.ip()) {
        if let Some(retry_after) = limiter.blocked_for(ip, now) {
            // Not audited one by one: a flood would only flood the log.
            let mut response = refusal(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "too many failed authentications from this address; retry in {retry_after} s"
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            return response;
        }
        limiter.record_failure(ip, now);
    }
    coordinator.audit(
        AuditRecord::new("auth_failure")
            .remote(remote)
            .details(json!({"path": request.uri().path(), "reason": reason})),
    );
    refusal(StatusCode::UNAUTHORIZED, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn current_and_unexpired_previous_tokens_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "token", "new-token\n");
        let store = TokenStore::load(dir.path()).unwrap();
        let now = Timestamp::now();
        assert!(store.accepts("new-token", now));
        assert!(!store.accepts("new-token2", now));
        assert!(!store.accepts("", now));
        assert_eq!(store.reload().unwrap(), None, "nothing changed");

        write(dir.path(), "previous-token", "old-token");
        // No deadline yet: the previous token is not accepted.
        assert!(store.reload().unwrap().is_some());
        assert!(!store.accepts("old-token", now));
        let until = now + jiff::SignedDuration::from_secs(60);
        write(dir.path(), "previous-valid-until", &until.to_string());
        let reloaded = store.reload().unwrap().unwrap();
        assert_eq!(reloaded.previous_valid_until, Some(until.to_string()));
        assert!(store.accepts("old-token", now));
        assert!(!store.accepts("old-token", until), "not at the deadline");
        assert!(store.accepts("new-token", until));
    }

    #[test]
    fn an_address_over_its_failure_allowance_waits_for_the_window() {
        let limiter = FailureLimiter::new(3, Duration::from_secs(10));
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.2".parse().unwrap(), "::1".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.blocked_for(a, t0), None);
            limiter.record_failure(a, t0);
        }
        assert_eq!(limiter.blocked_for(a, t0), Some(10));
        assert_eq!(limiter.blocked_for(b, t0), None, "per address");
        let later = t0 + Duration::from_secs(10);
        assert_eq!(limiter.blocked_for(a, later), None, "a new window");
        limiter.record_failure(a, later);
        assert_eq!(limiter.blocked_for(a, later), None);
    }

    #[test]
    fn a_missing_or_empty_token_file_is_an_error_and_keeps_the_old_tokens() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            TokenStore::load(dir.path()),
            Err(TokenError::Read { .. })
        ));
        write(dir.path(), "token", "  \n");
        assert!(matches!(
            TokenStore::load(dir.path()),
            Err(TokenError::Empty(_))
        ));
        write(dir.path(), "token", "t1");
        let store = TokenStore::load(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join("token")).unwrap();
        assert!(store.reload().is_err());
        assert!(store.accepts("t1", Timestamp::now()));
    }
}
