//! What a user with `get` (or `list`) on `DiLoCoServer`s sees: the list, one server's
//! summary, and its coordinator's `/status`, `/stats_history` and `/audit`, proxied.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use diloco_contract::api::stats::{DEFAULT_MAX_POINTS, MAX_MAX_POINTS};
use diloco_contract::api::{AUDIT, DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT, STATS_HISTORY, STATUS};
use diloco_contract::console::ServerSummary;
use serde::Deserialize;

use crate::caller::Caller;
use crate::error::ApiError;
use crate::kube_auth::Verb;
use crate::routes::actions::proxy;
use crate::servers::{get_server, summary as summary_of, validate_names, visible_servers};
use crate::state::AppState;

/// `GET /api/servers`.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ServerSummary>>, ApiError> {
    visible_servers(&state.client, &state.auth, &caller.user)
        .await
        .map(Json)
}

/// `GET /api/servers/{namespace}/{name}`.
pub async fn summary(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Json<ServerSummary>, ApiError> {
    validate_names(&namespace, &name)?;
    state
        .auth
        .require(&caller.user, Verb::Get, &namespace, &name)
        .await?;
    let server = get_server(&state.client, &namespace, &name).await?;
    Ok(Json(summary_of(&server)))
}

/// `GET …/status`: the coordinator's `/status`.
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    proxy(
        &state,
        &caller,
        &namespace,
        &name,
        Verb::Get,
        STATUS.to_string(),
        None,
    )
    .await
}

/// `?max_points=` of `…/history`.
#[derive(Deserialize)]
pub struct HistoryQuery {
    max_points: Option<usize>,
}

/// `GET …/history?max_points=N`: the coordinator's `/stats_history`.
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|_| ApiError::bad_request("max_points must be a positive integer"))?;
    let points = query
        .max_points
        .unwrap_or(DEFAULT_MAX_POINTS)
        .clamp(1, MAX_MAX_POINTS);
    let path = format!("{STATS_HISTORY}?max_points={points}");
    proxy(&state, &caller, &namespace, &name, Verb::Get, path, None).await
}

/// `?limit=` of `…/audit`.
#[derive(Deserialize)]
pub struct AuditQuery {
    limit: Option<usize>,
}

/// `GET …/audit?limit=N`: the coordinator's newest audit records (`/audit`).
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, name)): Path<(String, String)>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) =
        query.map_err(|_| ApiError::bad_request("limit must be a positive integer"))?;
    let limit = query
        .limit
        .unwrap_or(DEFAULT_AUDIT_LIMIT)
        .clamp(1, MAX_AUDIT_LIMIT);
    let path = format!("{AUDIT}?limit={limit}");
    proxy(&state, &caller, &namespace, &name, Verb::Get, path, None).await
}
