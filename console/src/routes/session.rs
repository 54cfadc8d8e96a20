//! Signing in with a Kubernetes token, out, and who is signed in.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use diloco_contract::console::{LoginRequest, SessionReply};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::session::{cleared_cookie, session_cookie, session_id_from_cookies};
use crate::state::AppState;

/// The longest token accepted (OIDC ID tokens with many groups run to a few KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// `POST /api/login`: reviews the token, starts a session, and forgets the token.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    // The rejection's text could quote the body, which may be the token: say only what is
    // expected.
    let Json(request) = body.map_err(|_| {
        ApiError::bad_request("the body must be JSON {\"token\": \"<Kubernetes bearer token>\"}")
    })?;
    let token = request.token.trim();
    if token.is_empty() {
        return Err(ApiError::bad_request("the token is empty"));
    }
    if token.len() > MAX_TOKEN_BYTES || token.chars().any(char::is_whitespace) {
        return Err(ApiError::bad_request(
            "that is not a bearer token (too long, or it contains spaces)",
        ));
    }
    if let Some(old) = session_id_from_cookies(headers.get_all(header::COOKIE).iter()) {
        state.sessions.remove(&old);
    }
    let user = match state.auth.review_token(token).await {
        Ok(user) => user,
        Err(refusal) => {
            tracing::info!(status = %refusal.status, "sign-in refused");
            return Err(refusal);
        }
    };
    let new = state.sessions.create(user)?;
    tracing::info!(user = %new.session.user.name, "signed in");
    let reply = SessionReply {
        user: new.session.user.name.clone(),
        csrf_token: new.session.csrf_token.clone(),
        idle_timeout_seconds: state.sessions.idle_timeout().as_secs(),
    };
    let mut response = Json(reply).into_response();
    set_cookie(&mut response, &session_cookie(&new.id))?;
    Ok(response)
}

/// `POST /api/logout`: ends the caller's session (a bearer caller has none).
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    caller: Caller,
) -> Result<Response, ApiError> {
    if let Some(id) = session_id_from_cookies(headers.get_all(header::COOKIE).iter()) {
        state.sessions.remove(&id);
    }
    tracing::info!(user = %caller.user.name, "signed out");
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(&mut response, &cleared_cookie())?;
    Ok(response)
}

/// `GET /api/session`: the signed-in user and the session's CSRF token, or 401.
pub async fn current(State(state): State<AppState>, caller: Caller) -> Json<SessionReply> {
    Json(SessionReply {
        user: caller.user.name,
        csrf_token: caller.session.map(|s| s.csrf_token).unwrap_or_default(),
        idle_timeout_seconds: state.sessions.idle_timeout().as_secs(),
    })
}

fn set_cookie(response: &mut Response, cookie: &str) -> Result<(), ApiError> {
    let value = HeaderValue::from_str(cookie)
        .map_err(|_| ApiError::internal("the session cookie is not a header value"))?;
    response.headers_mut().insert(header::SET_COOKIE, value);
    Ok(())
}
