//! Errors a request can end in: an HTTP status and a JSON body `{"error": …, "kind"?: …}`,
//! the shape forgather's clients expect.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::upload::UploadError;

/// A refused request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable kind (`unknown_worker`, `slice_mismatch`, …), when forgather has one.
    pub kind: Option<&'static str>,
    /// What went wrong, for a human.
    pub message: String,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            kind: None,
            message: message.into(),
        }
    }

    /// Adds a machine-readable kind.
    pub fn kind(mut self, kind: &'static str) -> Self {
        self.kind = Some(kind);
        self
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 for a worker id the coordinator does not know (never registered, or evicted).
    pub fn unknown_worker(worker_id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("unknown worker {worker_id}: register first (it may have been evicted after missing heartbeats)"),
        )
        .kind("unknown_worker")
    }

    /// 403 for an authenticated caller without the right to do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message).kind("forbidden")
    }

    /// 409 Conflict.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    /// 503 before the coordinator has parameters.
    pub fn uninitialized() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the coordinator has no parameters yet: POST the initial parameters to /init_params \
             (or configure model.initial_parameters)",
        )
        .kind("uninitialized")
    }

    /// 500 for a failure on our side.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<UploadError> for ApiError {
    fn from(error: UploadError) -> Self {
        let status = match &error {
            UploadError::Pickle => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            UploadError::TooLarge { .. } | UploadError::OutOfMemory(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        let kind = match &error {
            UploadError::Truncated { .. } => "truncated",
            UploadError::Pickle => "unsupported_format",
            UploadError::NotFinite(_) => "not_finite",
            UploadError::UnknownTensor(_) | UploadError::MissingTensors(_) => "tensor_names",
            UploadError::WrongShape { .. } => "tensor_shape",
            UploadError::WrongDtype { .. } | UploadError::MixedDtypes(..) => "tensor_dtype",
            UploadError::TooLarge { .. } | UploadError::OutOfMemory(_) => "too_large",
            _ => "malformed",
        };
        Self::new(status, error.to_string()).kind(kind)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.message });
        if let Some(kind) = self.kind {
            body["kind"] = kind.into();
        }
        (self.status, Json(body)).into_response()
    }
}
