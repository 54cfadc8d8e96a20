//! `GET /audit?limit=N` (admin only; the router checks the role first): the newest N records
//! of the audit log, oldest first, as [`AuditTail`]. N defaults to [`DEFAULT_AUDIT_LIMIT`] and
//! is clamped to 1..=[`MAX_AUDIT_LIMIT`]. Reading is not a control action and is not
//! audited. Without an audit log (`audit.path` unset) there are no records.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use diloco_contract::api::{AuditTail, DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT};
use serde::Deserialize;

use super::App;
use super::api_error::ApiError;
use crate::audit_tail::read_tail;

/// `/audit`'s query.
#[derive(Deserialize)]
pub struct AuditQuery {
    limit: Option<i64>,
}

/// The limit asked for, clamped to 1..=[`MAX_AUDIT_LIMIT`].
fn clamped(limit: Option<i64>) -> usize {
    limit.map_or(DEFAULT_AUDIT_LIMIT, |n| {
        usize::try_from(n.max(1))
            .unwrap_or(MAX_AUDIT_LIMIT)
            .min(MAX_AUDIT_LIMIT)
    })
}

pub async fn audit_tail(
    State(app): State<App>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!("expected ?limit=<integer>: {}", e.body_text()))
    })?;
    let limit = clamped(query.limit);
    let Some(path) = app.engine.config().audit.path.clone() else {
        return Ok(axum::Json(AuditTail::default()).into_response());
    };
    let records = tokio::task::spawn_blocking(move || read_tail(&path, limit))
        .await
        .map_err(|e| ApiError::internal(format!("reading the audit log failed: {e}")))?
        .map_err(|e| ApiError::internal(format!("could not read the audit log: {e}")))?;
    Ok(axum::Json(AuditTail { records }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_defaults_and_is_clamped() {
        assert_eq!(clamped(None), DEFAULT_AUDIT_LIMIT);
        assert_eq!(clamped(Some(0)), 1);
        assert_eq!(clamped(Some(-5)), 1);
        assert_eq!(clamped(Some(7)), 7);
        assert_eq!(clamped(Some(i64::MAX)), MAX_AUDIT_LIMIT);
    }
}
