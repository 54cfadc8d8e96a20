//! Limits on the JSON endpoints' request bodies: size and how long they may take to arrive.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use diloco_contract::api::ErrorKind;

use super::api_error::ApiError;

/// How much of a JSON request body is read, and for how long.
#[derive(Clone, Copy)]
pub struct BodyLimits {
    /// Most bytes read (413 beyond).
    pub bytes: usize,
    /// Longest the whole body may take to arrive (408 beyond).
    pub read_within: Duration,
}

/// Reads a JSON endpoint's request body before its handler runs: more than `limits.bytes`
/// gets 413, and a body not complete within `limits.read_within` gets 408, so a client that
/// trickles a body (or never finishes it) cannot hold a connection and a task indefinitely.
/// The handler's own work (a checkpoint on `/control/save_state`, say) has no deadline.
pub async fn read_body_within_limits(
    State(limits): State<BodyLimits>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, limits.bytes);
    let body = match tokio::time::timeout(limits.read_within, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(error)) => {
            let error = error.into_inner();
            return if error.is::<http_body_util::LengthLimitError>() {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "request body exceeds limits.max_json_bytes ({} bytes)",
                        limits.bytes
                    ),
                )
                .kind(ErrorKind::TooLarge)
            } else {
                ApiError::bad_request(format!("failed to read the request body: {error}"))
            }
            .into_response();
        }
        Err(_) => {
            return ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within limits.request_timeout_seconds \
                     ({}s)",
                    limits.read_within.as_secs()
                ),
            )
            .kind(ErrorKind::Timeout)
            .into_response();
        }
    };
    next.run(axum::extract::Request::from_parts(parts, body.into()))
        .await
}
