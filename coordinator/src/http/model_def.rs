//! `GET /model_def`: the model definition bundle, with the model hash a worker checks it
//! against (`X-Forgather-Model-Hash`, equal to `/info.model_hash`).

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use diloco_contract::api::{MODEL_HASH_HEADER, TAR_CONTENT_TYPE};

use super::{ApiError, App};
use crate::engine::EngineError;

pub async fn model_def(State(app): State<App>) -> Result<Response, ApiError> {
    let Some(definition) = app.engine.model_definition() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no model definition is configured (model.definition_dir; spec.model.definition)",
        ));
    };
    // The hash covers the parameters too: without them there is nothing to check against.
    let Some(hash) = app.engine.info().model_hash else {
        return Err(EngineError::Uninitialized.into());
    };
    let mut response = definition.tar().into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(TAR_CONTENT_TYPE),
    );
    if let Ok(value) = HeaderValue::from_str(&hash) {
        headers.insert(MODEL_HASH_HEADER, value);
    }
    Ok(response)
}
