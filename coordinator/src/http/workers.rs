//! `/register`, `/heartbeat`, `/deregister`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use diloco_contract::api::{
    self, BULK_URL_HEADER, HeartbeatRequest, OkReply, RegisterRequest, WorkerRef,
};
use serde_json::json;

use super::api_error::ApiError;
use super::python_json::non_finite_as_null;
use super::tensors::{response_format, tensor_response};
use super::{App, audit_if_forbidden, audit_record, caller, parse_json};
use crate::audit::bounded;

pub async fn register(
    State(app): State<App>,
    extensions: Extensions,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Result<Response, ApiError> {
    let format = response_format(&app, &uri)?;
    let request: RegisterRequest = parse_json(&body)?;
    let (worker_id, hostname) = (
        request.worker_id.clone(),
        request.hostname.as_deref().map(bounded),
    );
    let published = app
        .engine
        .register(request, caller(&extensions)?)
        .await
        .map_err(|e| audit_if_forbidden(&app, &extensions, api::REGISTER, e.into()))?;
    app.engine.audit(
        audit_record("register", &extensions)
            .worker(worker_id)
            .round(published.round)
            .details(json!({
                "hostname": hostname,
                "num_registered": app.engine.num_registered(),
            })),
    );
    let mut response = tensor_response(&published, format).await?;
    if let Some(url) = app.bulk.as_ref().map(|advert| advert.url(&headers))
        && let Ok(value) = HeaderValue::from_str(&url)
    {
        response.headers_mut().insert(BULK_URL_HEADER, value);
    }
    Ok(response)
}

pub async fn heartbeat(
    State(app): State<App>,
    extensions: Extensions,
    body: Bytes,
) -> Result<Response, ApiError> {
    // forgather's workers may send NaN/Infinity in their statistics (Python's json.dumps).
    let request: HeartbeatRequest = parse_json(&non_finite_as_null(&body))?;
    let reply = app
        .engine
        .heartbeat(request, caller(&extensions)?)
        .map_err(|e| audit_if_forbidden(&app, &extensions, api::HEARTBEAT, e.into()))?;
    Ok(axum::Json(reply).into_response())
}

pub async fn deregister(
    State(app): State<App>,
    extensions: Extensions,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: WorkerRef = parse_json(&body)?;
    app.engine
        .deregister(&request.worker_id, caller(&extensions)?)
        .map_err(|e| audit_if_forbidden(&app, &extensions, api::DEREGISTER, e.into()))?;
    Ok(axum::Json(OkReply::default()).into_response())
}
