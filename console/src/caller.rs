//! Who is calling: a program with `Authorization: Bearer <Kubernetes token>` (reviewed, no
//! session, no CSRF token needed: a browser never adds that header on its own), or a browser
//! with the session cookie, whose every `POST` must echo the session's CSRF token.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{Method, header};
use diloco_contract::api::BEARER_SCHEME;
use diloco_contract::console::CSRF_HEADER;

use crate::error::ApiError;
use crate::kube_auth::User;
use crate::session::{Session, session_id_from_cookies};
use crate::state::AppState;

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who.
    pub user: User,
    /// The browser session, when the caller has one (not for bearer callers).
    pub session: Option<Session>,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(authorization) = parts.headers.get(header::AUTHORIZATION) {
            let token = bearer_token(authorization).ok_or_else(|| {
                ApiError::unauthenticated("Authorization must be `Bearer <token>`")
            })?;
            let user = state.auth.bearer(token).await?;
            return Ok(Self {
                user,
                session: None,
            });
        }
        let id = session_id_from_cookies(parts.headers.get_all(header::COOKIE).iter())
            .ok_or_else(|| ApiError::unauthenticated("not signed in"))?;
        let session = state
            .sessions
            .touch(&id)
            .ok_or_else(|| ApiError::unauthenticated("the session has ended; sign in again"))?;
        if parts.method != Method::GET && parts.method != Method::HEAD {
            let presented = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !session.csrf_matches(presented) {
                return Err(ApiError::forbidden(format!(
                    "missing or wrong {CSRF_HEADER} header: a request that changes something \
                     must carry the session's CSRF token"
                )));
            }
        }
        Ok(Self {
            user: session.user.clone(),
            session: Some(session),
        })
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme compared without regard to case).
fn bearer_token(value: &axum::http::HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case(BEARER_SCHEME) && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn only_a_bearer_scheme_with_a_token_is_a_token() {
        let token = |v: &'static str| bearer_token(&HeaderValue::from_static(v)).map(String::from);
        assert_eq!(token("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(token("bearer  abc ").as_deref(), Some("abc"));
        assert_eq!(token("Basic abc"), None);
        assert_eq!(token("Bearer "), None);
        assert_eq!(token("Bearer"), None);
    }
}
