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
    #[error("failed to {action}{}", source.as_ref().map(|s| format!(": {s}")).unwrap_or_default())]
    Pki {
        action: String,
        #[source]
        source: Option<BoxedSource>,
    },
    /// Serialising a child object failed.
    #[error("failed to serialise {what}: {source}")]
    Serialize {
        what: String,
        #[source]
        source: BoxedSource,
    },
}

impl Error {
    /// The metric label for this error.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { .. } => "kube",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::Refused(_) => "refused",
            Self::Pki { .. } => "pki",
            Self::Serialize { .. } => "serialize",
        }
    }

    /// A PKI failure while doing `action`, caused by `source`.
    pub fn pki<E>(action: impl Into<String>, source: E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Self::Pki {
            action: action.into(),
            source: Some(Box::new(source)),
        }
    }

    /// A PKI failure whose cause carries nothing worth showing (ring's `Unspecified`).
    pub fn pki_without_source(action: impl Into<String>) -> Self {
        Self::Pki {
            action: action.into(),
            source: None,
        }
    }

    /// Serialising `what` failed with `source`.
    pub fn serialize<E>(what: impl Into<String>) -> impl FnOnce(E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let what = what.into();
        move |source| Self::Serialize {
            what,
            source: Box::new(source),
        }
    }

    /// Wraps a kube error with what we were doing.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Kube { action, source }
    }
}

/// The cause of an error from a library the operator uses.
pub type BoxedSource = Box<dyn std::error::Error + Send + Sync>;

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
