//! `/register`, `/heartbeat`, `/deregister`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::tensors::tensor_response;
use super::{App, BULK_URL_HEADER, audit_if_forbidden, audit_record, caller, parse_json};
use crate::api_error::ApiError;
use crate::audit::bounded;
use crate::engine::RegisterRequest;
use crate::wire::messages::WorkerRef;

pub async fn register(
    State(app): State<App>,
    extensions: Extensions,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: RegisterRequest = parse_json(&body)?;
    let (worker_id, hostname) = (
        request.worker_id.clone(),
        request.hostname.as_deref().map(bounded),
    );
    let published = app
        .register(request, caller(&extensions)?)
        .await
        .map_err(|e| audit_if_forbidden(&app, &extensions, "/register", e))?;
    app.audit(
        audit_record("register", &extensions)
            .worker(worker_id)
            .round(published.round)
            .details(json!({"hostname": hostname})),
    );
    let mut response = tensor_response(&published);
    if let Some(url) = app.bulk_advert().map(|advert| advert.url(&headers))
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
    let reply = app
        .heartbeat(parse_json(&body)?, caller(&extensions)?)
        .map_err(|e| audit_if_forbidden(&app, &extensions, "/heartbeat", e))?;
    Ok(axum::Json(reply).into_response())
}

pub async fn deregister(
    State(app): State<App>,
    extensions: Extensions,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: WorkerRef = parse_json(&body)?;
    app.deregister(&request.worker_id, caller(&extensions)?)
        .map_err(|e| audit_if_forbidden(&app, &extensions, "/deregister", e))?;
    Ok(axum::Json(json!({"status": "ok"})).into_response())
}
