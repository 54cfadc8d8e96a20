//! The operator's one error type. Variant names double as the `error` label of the
//! `diloco_operator_reconcile_errors_total` metric.

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("failed to {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    /// The spec passed the schema but cannot be reconciled (reported in a condition).
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// Something another object can fix stops the server: a referenced Secret, claim or
    /// ServiceAccount missing, unlabelled or unusable, or a child's name taken (reported in a
    /// condition; retried sooner than a spec error).
    #[error("{0}")]
    Refused(String),
    /// Minting or reading a certificate or key failed.
    #[error("failed to {0}")]
    Pki(String),
    /// Serialising a child object failed.
    #[error("failed to serialise {what}: {message}")]
    Serialize { what: String, message: String },
}

impl Error {
    /// The metric label for this error.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::Refused(_) => "refused",
            Self::Pki(_) => "pki",
            Self::Serialize { .. } => "serialize",
        }
    }

    /// Wraps a kube error with what we were doing.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Kube { action, source }
    }
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
