//! Errors a request can end in: an HTTP status and the contract's [`ErrorBody`]
//! (`{"error": …, "kind"?: …}`, the shape forgather's clients expect). This is where the round
//! engine's and the upload pipeline's refusals get their status codes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use diloco_contract::api::{ErrorBody, ErrorKind};

use crate::engine::EngineError;
use crate::engine::work_units::WorkError;
use crate::upload::UploadError;
use crate::wire::torch_save::TorchSaveError;

/// A refused request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable kind, when forgather has one.
    pub kind: Option<ErrorKind>,
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
    pub fn kind(mut self, kind: ErrorKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 403 for an authenticated caller without the right to do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message).kind(ErrorKind::Forbidden)
    }

    /// 500 for a failure on our side.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        use EngineError as E;
        let (status, kind) = match &error {
            E::UnknownWorker(_) => (StatusCode::NOT_FOUND, Some(ErrorKind::UnknownWorker)),
            E::Forbidden(_) => (StatusCode::FORBIDDEN, Some(ErrorKind::Forbidden)),
            E::BadRequest(_) | E::NoCheckpoint => (StatusCode::BAD_REQUEST, None),
            E::Uninitialized => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(ErrorKind::Uninitialized),
            ),
            E::AlreadyInitialized => (StatusCode::CONFLICT, Some(ErrorKind::AlreadyInitialized)),
            E::AlreadyRegistered { .. } | E::AlreadyFolded { .. } | E::UploadOrphaned { .. } => {
                (StatusCode::CONFLICT, None)
            }
            E::TooManyWorkers(_) | E::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, None),
            E::SliceMismatch(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some(ErrorKind::SliceMismatch),
            ),
            E::StaleRound { .. } => (StatusCode::CONFLICT, Some(ErrorKind::StaleRound)),
            E::AlreadySubmitted { .. } | E::UploadInProgress(_) => {
                (StatusCode::CONFLICT, Some(ErrorKind::DuplicateSubmission))
            }
            E::RoundTimeout { .. } | E::PublishTimeout => (StatusCode::GATEWAY_TIMEOUT, None),
            E::Work(work) => (work_status(work), None),
            E::Stopped | E::OuterStep(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
        };
        Self {
            status,
            kind,
            message: error.to_string(),
        }
    }
}

/// forgather's statuses for work-unit refusals (reference §2.4).
fn work_status(error: &WorkError) -> StatusCode {
    match error {
        WorkError::Invalid(_) | WorkError::UnitOutOfRange { .. } => StatusCode::BAD_REQUEST,
        WorkError::NoQueue { .. } => StatusCode::NOT_FOUND,
        WorkError::LengthMismatch { .. } | WorkError::TooManyQueues => StatusCode::CONFLICT,
    }
}

impl From<UploadError> for ApiError {
    fn from(error: UploadError) -> Self {
        let status = match &error {
            UploadError::FormatMismatch => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            UploadError::TorchSave(e) if e.is_refused_construct() => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            UploadError::TorchSave(TorchSaveError::TooLarge { .. })
            | UploadError::TooLarge { .. }
            | UploadError::OutOfMemory(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        let kind = match &error {
            UploadError::Truncated { .. } => ErrorKind::Truncated,
            UploadError::FormatMismatch => ErrorKind::UnsupportedFormat,
            UploadError::TorchSave(e) if e.is_refused_construct() => ErrorKind::UnsupportedFormat,
            UploadError::TorchSave(TorchSaveError::TooLarge { .. }) => ErrorKind::TooLarge,
            UploadError::NotFinite(_) => ErrorKind::NotFinite,
            UploadError::UnknownTensor(_) | UploadError::MissingTensors(_) => {
                ErrorKind::TensorNames
            }
            UploadError::WrongShape { .. } => ErrorKind::TensorShape,
            UploadError::WrongDtype { .. } | UploadError::MixedDtypes(..) => ErrorKind::TensorDtype,
            UploadError::TooLarge { .. } | UploadError::OutOfMemory(_) => ErrorKind::TooLarge,
            _ => ErrorKind::Malformed,
        };
        Self::new(status, error.to_string()).kind(kind)
    }
}

impl ApiError {
    /// The response body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.message.clone(),
            kind: self.kind.map(|k| k.as_str().to_string()),
            bulk_url: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Caller, Role};

    /// What clients branch on: the status and kind of each engine refusal.
    #[test]
    fn engine_refusals_keep_forgathers_status_codes_and_kinds() {
        let cases = [
            (
                EngineError::UnknownWorker("w".into()),
                404,
                Some(ErrorKind::UnknownWorker),
            ),
            (
                EngineError::StaleRound { theirs: 1, ours: 2 },
                409,
                Some(ErrorKind::StaleRound),
            ),
            (
                EngineError::AlreadySubmitted {
                    worker_id: "w".into(),
                    round: 0,
                },
                409,
                Some(ErrorKind::DuplicateSubmission),
            ),
            (
                EngineError::UploadInProgress("w".into()),
                409,
                Some(ErrorKind::DuplicateSubmission),
            ),
            (
                EngineError::AlreadyInitialized,
                409,
                Some(ErrorKind::AlreadyInitialized),
            ),
            (
                EngineError::Uninitialized,
                503,
                Some(ErrorKind::Uninitialized),
            ),
            (
                EngineError::SliceMismatch("x".into()),
                422,
                Some(ErrorKind::SliceMismatch),
            ),
            (EngineError::TooManyWorkers(3), 503, None),
            (EngineError::ShuttingDown, 503, None),
            (EngineError::PublishTimeout, 504, None),
            (EngineError::NoCheckpoint, 400, None),
        ];
        for (error, status, kind) in cases {
            let described = error.to_string();
            let api = ApiError::from(error);
            assert_eq!(
                (api.status.as_u16(), api.kind),
                (status, kind),
                "{described}"
            );
            assert_eq!(api.message, described);
        }
    }

    /// A certificate acting outside its name is a 403 `forbidden` naming the rule.
    #[test]
    fn a_forbidden_caller_is_a_403_with_its_reason() {
        let refusal = Caller::certificate("site-a", Role::Worker)
            .check_worker_id("site-b")
            .unwrap_err();
        let api = ApiError::from(EngineError::from(refusal));
        assert_eq!(api.status, StatusCode::FORBIDDEN);
        assert_eq!(api.kind, Some(ErrorKind::Forbidden));
        assert!(api.message.contains("CN=site-a"), "{}", api.message);
        assert_eq!(
            serde_json::to_value(api.body()).unwrap()["kind"],
            "forbidden"
        );
    }
}
