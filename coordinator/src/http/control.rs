//! `POST /control/<action>` (admin only; the router checks the role first): the body is
//! recorded in the audit log as sent (by allowlist), then parsed per action and run.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use diloco_contract::api::{ControlAction, ControlRequest};
use serde_json::{Value, json};

use super::api_error::ApiError;
use super::{App, audit_record, parse_json};
use crate::audit::control_summary;

pub async fn control(
    State(app): State<App>,
    Path(name): Path<String>,
    extensions: Extensions,
    body: Bytes,
) -> Result<Response, ApiError> {
    let action = ControlAction::from_name(&name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Unknown control action {name}"),
        )
    })?;
    let body: Value = parse_json(&body)?;
    // Recorded before the action runs, so a failing action is recorded too.
    app.engine.audit(
        audit_record("control", &extensions)
            .details(json!({"action": name, "body": control_summary(action, &body)})),
    );
    let request = ControlRequest::parse(action, body)
        .map_err(|e| ApiError::bad_request(format!("invalid body for {name}: {e}")))?;
    let engine = app.engine.clone();
    let reply = tokio::task::spawn_blocking(move || engine.control(request))
        .await
        .map_err(|e| ApiError::internal(format!("control action failed: {e}")))??;
    Ok(axum::Json(reply).into_response())
}
