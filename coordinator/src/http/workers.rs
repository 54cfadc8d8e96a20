//! `/register`, `/heartbeat`, `/deregister`.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::tensors::tensor_response;
use super::{App, parse_json};
use crate::api_error::ApiError;

pub async fn register(State(app): State<App>, body: Bytes) -> Result<Response, ApiError> {
    let published = app.register(parse_json(&body)?).await?;
    Ok(tensor_response(&published))
}

pub async fn heartbeat(State(app): State<App>, body: Bytes) -> Result<Response, ApiError> {
    Ok(axum::Json(app.heartbeat(parse_json(&body)?)?).into_response())
}

#[derive(Deserialize)]
struct Deregister {
    worker_id: String,
}

pub async fn deregister(State(app): State<App>, body: Bytes) -> Result<Response, ApiError> {
    let request: Deregister = parse_json(&body)?;
    app.deregister(&request.worker_id);
    Ok(axum::Json(json!({"status": "ok"})).into_response())
}
