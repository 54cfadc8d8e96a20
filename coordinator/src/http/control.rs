//! `POST /control/<action>` (admin only; the router checks the role first): the action is
//! recorded in the audit log first (its body by allowlist; an unknown action by its sanitized
//! name, without body), then parsed and run.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Extensions, StatusCode};
use axum::response::{IntoResponse, Response};
use diloco_contract::api::{ControlAction, ControlRequest};
use serde_json::{Value, json};

use super::api_error::ApiError;
use super::{App, audit_record, parse_json};
use crate::audit::{control_summary, sanitized_action};

pub async fn control(
    State(app): State<App>,
    Path(name): Path<String>,
    extensions: Extensions,
    body: Bytes,
) -> Result<Response, ApiError> {
    let action = ControlAction::from_name(&name);
    let parsed: Result<Value, ApiError> = parse_json(&body);
    // Recorded before anything is refused or run, so an unknown, malformed or failing action
    // is recorded too (forgather's order); only allowlisted fields of the body, and for an
    // unknown action none, with its name sanitized.
    let summary = match (action, &parsed) {
        (Some(action), Ok(body)) => control_summary(action, body),
        _ => json!({}),
    };
    app.engine.audit(
        audit_record("control", &extensions)
            .details(json!({"action": sanitized_action(&name), "body": summary})),
    );
    let action = action.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Unknown control action {}", sanitized_action(&name)),
        )
    })?;
    let request = ControlRequest::parse(action, parsed?)
        .map_err(|e| ApiError::bad_request(format!("invalid body for {name}: {e}")))?;
    let engine = app.engine.clone();
    let reply = tokio::task::spawn_blocking(move || engine.control(request))
        .await
        .map_err(|e| ApiError::internal(format!("control action failed: {e}")))??;
    Ok(axum::Json(reply).into_response())
}
