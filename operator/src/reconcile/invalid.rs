//! Why a server cannot be reconciled: the refusal every check (validation, references,
//! ownership) returns and the status step turns into a condition.

/// Why a spec cannot be reconciled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The condition reason (PascalCase).
    pub reason: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
    /// Whether it is about credentials (`CredentialsReady=False`) or the spec in general.
    pub credentials: bool,
    /// Whether another object can fix it (a Secret created or labelled, a name freed), so the
    /// server is retried soon; otherwise only a spec change does.
    pub fixed_elsewhere: bool,
}

impl Invalid {
    /// A spec problem only a spec change fixes.
    pub fn spec(message: impl Into<String>) -> Self {
        Self::spec_with_reason("InvalidSpec", message)
    }

    /// A spec problem with its own reason.
    pub fn spec_with_reason(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            credentials: false,
            fixed_elsewhere: false,
        }
    }

    /// A credential Secret that is missing, refused or unusable.
    pub fn credentials(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            credentials: true,
            fixed_elsewhere: true,
        }
    }

    /// Another object (a claim, a ServiceAccount, a name) is missing, refused or taken.
    pub fn other(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            credentials: false,
            fixed_elsewhere: true,
        }
    }
}
