//! What a user with `patch` on a `DiLoCoServer` may do: control actions, proxied to its
//! coordinator, and rotations, through its annotations. Also the proxy every coordinator
//! request goes through.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use diloco_contract::api::{ControlAction, ControlRequest};
use diloco_contract::console::{PROXIED_ACTIONS, Rotation};

use crate::caller::Caller;
use crate::error::ApiError;
use crate::kube_auth::Verb;
use crate::rotation::{RotationRequested, request_rotation};
use crate::servers::{get_server, validate_names};
use crate::state::AppState;
use crate::upstream::{Target, read_client_certificate};

/// `POST …/control/{action}`: an allowlisted action, its JSON body checked, then proxied.
pub async fn control(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, action)): Path<(String, String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // Before anything is asked of anyone: the action must be one the console proxies.
    let action = ControlAction::from_name(&action)
        .filter(|a| PROXIED_ACTIONS.contains(a))
        .ok_or_else(|| {
            let allowed: Vec<&str> = PROXIED_ACTIONS.iter().map(|a| a.name()).collect();
            ApiError::bad_request(format!(
                "unknown control action {action:?}; the console proxies {}",
                allowed.join(", ")
            ))
        })?;
    let body = body.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is too large or unreadable",
        )
    })?;
    let json = if body.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|_| ApiError::bad_request("the request body is not JSON"))?
    };
    ControlRequest::parse(action, json.clone())
        .map_err(|e| ApiError::bad_request(format!("invalid body for {}: {e}", action.name())))?;
    let reply = proxy(
        &state,
        &caller,
        &namespace,
        &name,
        Verb::Patch,
        action.path(),
        Some(Bytes::from(json.to_string())),
    )
    .await;
    let outcome = match &reply {
        Ok(response) => response.status().as_u16(),
        Err(refusal) => refusal.status.as_u16(),
    };
    tracing::info!(
        user = %caller.user.name, %namespace, server = %name, action = action.name(), status = outcome,
        "control action"
    );
    reply
}

/// `POST …/rotate/{what}`: a fresh value of the rotation annotation.
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name, what)): Path<(String, String, String)>,
) -> Result<Json<RotationRequested>, ApiError> {
    let what = Rotation::from_name(&what).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unknown rotation {what:?}; the console rotates token and certificates"
        ))
    })?;
    validate_names(&namespace, &name)?;
    state
        .auth
        .require(&caller.user, Verb::Patch, &namespace, &name)
        .await?;
    get_server(&state.client, &namespace, &name).await?;
    let requested = request_rotation(&state.client, &namespace, &name, what).await?;
    tracing::info!(
        user = %caller.user.name, %namespace, server = %name, rotation = what.name(),
        "rotation requested"
    );
    Ok(Json(requested))
}

/// Sends `path` to the coordinator of `namespace/name` for `caller`, who must be allowed to
/// `verb` that server: names checked, access reviewed, the resource read (404 if it does not
/// exist), the coordinator's address derived from it, the console's certificate read.
pub async fn proxy(
    state: &AppState,
    caller: &Caller,
    namespace: &str,
    name: &str,
    verb: Verb,
    path: String,
    body: Option<Bytes>,
) -> Result<Response, ApiError> {
    validate_names(namespace, name)?;
    state
        .auth
        .require(&caller.user, verb, namespace, name)
        .await?;
    let server = get_server(&state.client, namespace, name).await?;
    let target = Target::of(&server, &state.settings.cluster_domain)?;
    let certificate = read_client_certificate(&state.client, &target).await?;
    let method = if body.is_some() {
        reqwest::Method::POST
    } else {
        reqwest::Method::GET
    };
    let reply = state
        .upstream
        .call(&target, &certificate, method, &path, body)
        .await;
    if let Err(refusal) = &reply
        && refusal.is_upstream_auth_failure()
    {
        tracing::warn!(%namespace, server = %name, "the coordinator refused the console's certificate");
    }
    if let Ok(response) = &reply
        && response
            .headers()
            .contains_key(diloco_contract::console::UPSTREAM_AUTH_FAILED_HEADER)
    {
        tracing::warn!(%namespace, server = %name, status = %response.status(), "the coordinator refused the console's certificate");
    }
    reply
}
