//! Bearer-token authentication.
//!
//! Tokens are read from a directory laid out like the mounted Kubernetes Secret the operator
//! creates: `token` (the current token), and during a rotation `previous-token` with
//! `previous-valid-until` (RFC 3339): the previous token keeps working until then. The files
//! are re-read every second and a change takes effect without a restart. Tokens are compared
//! as SHA-256 digests in constant time; only digests are kept in memory after loading.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

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

/// Re-reads the token files every second for as long as the server runs, auditing changes.
pub async fn reload_forever(tokens: Arc<TokenStore>, coordinator: Arc<Coordinator>) {
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut failing = false;
    loop {
        interval.tick().await;
        match tokens.reload() {
            Ok(None) => failing = false,
            Ok(Some(reloaded)) => {
                failing = false;
                tracing::info!(previous_valid_until = ?reloaded.previous_valid_until, "bearer tokens reloaded");
                coordinator.audit(AuditRecord::new("credential_reload").details(json!({
                    "credential": "bearer_token",
                    "previous_valid_until": reloaded.previous_valid_until,
                })));
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(%error, "bearer tokens not reloaded; the old ones stay in force");
                }
                failing = true;
            }
        }
    }
}

/// Who made an authenticated request, for audit records.
#[derive(Clone, Debug)]
pub struct Peer(pub String);

/// The remote address of a request, when the server recorded it.
pub fn remote_addr(request_extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    request_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
}

/// Middleware: every path but `/health` needs a valid bearer token.
pub async fn require_bearer(
    State((coordinator, tokens)): State<(Arc<Coordinator>, Arc<TokenStore>)>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/health" {
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
    coordinator.audit(
        AuditRecord::new("auth_failure")
            .remote(remote_addr(request.extensions()))
            .details(json!({"path": request.uri().path(), "reason": reason})),
    );
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, reason)
        .kind("auth")
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"diloco\""),
    );
    response
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
