//! The body of every refused request, `{"error": …, "kind"?: …}` (the shape forgather's
//! clients expect), and the machine-readable kinds clients act on.

use serde::{Deserialize, Serialize};

/// The JSON body of an error response.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for a human. Never a credential.
    pub error: String,
    /// What went wrong, for a program ([`ErrorKind::as_str`]); absent where forgather has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// On a bulk path's 404 on the control plane: where the bulk plane is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulk_url: Option<String>,
}

/// The body of a 401 (and of the 429 that refuses an address with too many failures): the
/// error body plus the realm of the `WWW-Authenticate` challenge, as forgather sends it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRefusalBody {
    /// Why.
    #[serde(flatten)]
    pub error: ErrorBody,
    /// [`crate::api::AUTH_REALM`].
    pub realm: String,
}

impl ErrorBody {
    /// Whether the error is of `kind`.
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.kind.as_deref() == Some(kind.as_str())
    }
}

/// Machine-readable error kinds. Clients branch on some of them (re-register on
/// [`ErrorKind::UnknownWorker`], adopt the current parameters on [`ErrorKind::StaleRound`],
/// wait for the round on [`ErrorKind::DuplicateSubmission`], skip `/init_params` on
/// [`ErrorKind::AlreadyInitialized`]); the rest say which rule refused an upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// 404: the worker id is not registered (never was, or was evicted).
    UnknownWorker,
    /// 403: an authenticated caller without the right to do this.
    Forbidden,
    /// 401 / 429: no valid credential, or too many failures from this address.
    Auth,
    /// 503: the coordinator has no parameters yet.
    Uninitialized,
    /// 409: `/init_params` when parameters exist.
    AlreadyInitialized,
    /// 409: a pseudo-gradient computed from another round's parameters.
    StaleRound,
    /// 409: a second upload from the same worker in one round.
    DuplicateSubmission,
    /// 422: `param_shapes` do not match the model.
    SliceMismatch,
    /// 413: over `limits.max_upload_bytes` (or the memory could not be had).
    TooLarge,
    /// 400: the body ended before the frame said it would.
    Truncated,
    /// 415: a pickle opcode or global outside the torch.save allowlist, or a zip archive sent
    /// as safetensors (a pickle is never unpickled).
    UnsupportedFormat,
    /// 400: a NaN or infinity in an upload.
    NotFinite,
    /// 400: unknown or missing tensor names.
    TensorNames,
    /// 400: a tensor of the wrong shape.
    TensorShape,
    /// 400: a tensor of the wrong dtype, or mixed dtypes.
    TensorDtype,
    /// 400: anything else malformed in an upload.
    Malformed,
    /// 400: an upload stopped sending.
    Stalled,
    /// 408: a JSON body did not arrive within `limits.request_timeout_seconds`.
    Timeout,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 18] = [
        ErrorKind::UnknownWorker,
        ErrorKind::Forbidden,
        ErrorKind::Auth,
        ErrorKind::Uninitialized,
        ErrorKind::AlreadyInitialized,
        ErrorKind::StaleRound,
        ErrorKind::DuplicateSubmission,
        ErrorKind::SliceMismatch,
        ErrorKind::TooLarge,
        ErrorKind::Truncated,
        ErrorKind::UnsupportedFormat,
        ErrorKind::NotFinite,
        ErrorKind::TensorNames,
        ErrorKind::TensorShape,
        ErrorKind::TensorDtype,
        ErrorKind::Malformed,
        ErrorKind::Stalled,
        ErrorKind::Timeout,
    ];

    /// Its name on the wire (also the `reason` label of rejected-upload metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::UnknownWorker => "unknown_worker",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Auth => "auth",
            ErrorKind::Uninitialized => "uninitialized",
            ErrorKind::AlreadyInitialized => "already_initialized",
            ErrorKind::StaleRound => "stale_round",
            ErrorKind::DuplicateSubmission => "duplicate_submission",
            ErrorKind::SliceMismatch => "slice_mismatch",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::Truncated => "truncated",
            ErrorKind::UnsupportedFormat => "unsupported_format",
            ErrorKind::NotFinite => "not_finite",
            ErrorKind::TensorNames => "tensor_names",
            ErrorKind::TensorShape => "tensor_shape",
            ErrorKind::TensorDtype => "tensor_dtype",
            ErrorKind::Malformed => "malformed",
            ErrorKind::Stalled => "stalled",
            ErrorKind::Timeout => "timeout",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `as_str` and serde agree, so the metric label is the wire name.
    #[test]
    fn kinds_are_named_alike_on_the_wire_and_in_metrics() {
        for kind in ErrorKind::ALL {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.as_str().into())
            );
        }
        let body: ErrorBody =
            serde_json::from_str(r#"{"error": "who?", "kind": "unknown_worker"}"#).unwrap();
        assert!(body.is(ErrorKind::UnknownWorker));
        assert!(!body.is(ErrorKind::StaleRound));
    }
}
