//! Work-unit dispatch (`/datasets/register`, `/work/request`, `/work/complete`,
//! `/work/queues`, `/work/queue`) and `/stats_history`, forgather's bodies and statuses
//! (reference §1.10, §2.4).
//!
//! Who may call them: any authenticated caller, worker or admin, as in forgather (they carry
//! no secrets and change no training state); a caller bound to a certificate name acts only
//! as worker ids under that name (checked by the engine).

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::Extensions;
use axum::response::{IntoResponse, Response};
use diloco_contract::api::stats::DEFAULT_MAX_POINTS;
use diloco_contract::api::{DatasetRegisterRequest, WorkCompleteRequest, WorkRequest};
use serde::Deserialize;

use super::api_error::ApiError;
use super::{App, caller, parse_json};

pub async fn register_dataset(
    State(app): State<App>,
    extensions: Extensions,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: DatasetRegisterRequest = parse_json(&body)?;
    let reply = app.engine.register_dataset(request, caller(&extensions)?)?;
    Ok(axum::Json(reply).into_response())
}

pub async fn request_unit(
    State(app): State<App>,
    extensions: Extensions,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: WorkRequest = parse_json(&body)?;
    let reply = app.engine.request_unit(&request, caller(&extensions)?)?;
    Ok(axum::Json(reply).into_response())
}

pub async fn complete_unit(
    State(app): State<App>,
    extensions: Extensions,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: WorkCompleteRequest = parse_json(&body)?;
    let reply = app.engine.complete_unit(&request, caller(&extensions)?)?;
    Ok(axum::Json(reply).into_response())
}

pub async fn queues(State(app): State<App>) -> Response {
    axum::Json(app.engine.work_queues()).into_response()
}

/// `/work/queue`'s query.
#[derive(Deserialize)]
pub struct QueueQuery {
    dataset_id: String,
    shuffle_seed: i64,
}

pub async fn queue(
    State(app): State<App>,
    query: Result<Query<QueueQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "expected ?dataset_id=<id>&shuffle_seed=<integer>: {}",
            e.body_text()
        ))
    })?;
    let detail = app
        .engine
        .work_queue(&query.dataset_id, query.shuffle_seed)?;
    Ok(axum::Json(detail).into_response())
}

/// `/stats_history`'s query.
#[derive(Deserialize)]
pub struct HistoryQuery {
    max_points: Option<i64>,
}

pub async fn stats_history(
    State(app): State<App>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!("expected ?max_points=<integer>: {}", e.body_text()))
    })?;
    // Out-of-range values are clamped (to 1..=20000), not refused, as in forgather.
    let max_points = query.max_points.map_or(DEFAULT_MAX_POINTS, |n| {
        usize::try_from(n.max(1)).unwrap_or(usize::MAX)
    });
    Ok(axum::Json(app.engine.stats_history(max_points)).into_response())
}
