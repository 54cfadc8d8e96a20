//! Validate: what the schema and CEL rules cannot check — durations that must relate to each
//! other, and Secrets the spec refers to. A failure becomes a status condition with a reason,
//! never a crash.

use jiff::SignedDuration;

use diloco_crds::{AuthMode, DiLoCoServer, TlsMode, TrainingMode, parse_duration};

use crate::reconcile::certificates::{Lifetimes, TLS_CERT_KEY, TLS_KEY_KEY};
use crate::reconcile::load::Observed;
use crate::reconcile::token::{TOKEN_KEY, secret_strings};

/// Longer durations are refused: they would overflow date arithmetic and mean nothing.
const LONGEST_DURATION: SignedDuration = SignedDuration::from_hours(100 * 365 * 24);

/// A spec the rest of the pipeline can rely on.
#[derive(Clone, Debug)]
pub struct ValidatedSpec {
    /// How long a rotated-out token (and CA) stays valid.
    pub grace: SignedDuration,
    /// Certificate lifetimes (for `tls.mode: operator`).
    pub lifetimes: Lifetimes,
}

/// Why a spec cannot be reconciled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    /// The condition reason (PascalCase).
    pub reason: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
    /// Whether it is about credentials (`CredentialsReady=False`) or the spec in general.
    pub credentials: bool,
}

impl Invalid {
    fn spec(message: impl Into<String>) -> Self {
        Self {
            reason: "InvalidSpec",
            message: message.into(),
            credentials: false,
        }
    }

    fn credentials(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            credentials: true,
        }
    }
}

/// Checks `server` against what exists.
pub fn validate(server: &DiLoCoServer, observed: &Observed) -> Result<ValidatedSpec, Invalid> {
    let spec = &server.spec;
    let duration = |field: &str, text: &str| {
        let parsed = parse_duration(text).map_err(|e| Invalid::spec(format!("{field}: {e}")))?;
        SignedDuration::try_from(parsed)
            .ok()
            .filter(|d| *d <= LONGEST_DURATION)
            .ok_or_else(|| Invalid::spec(format!("{field}: {text} is longer than 100 years")))
    };
    let grace = duration("auth.rotationGracePeriod", &spec.auth.rotation_grace_period)?;
    let lifetimes = Lifetimes {
        ca: duration("tls.caDuration", &spec.tls.ca_duration)?,
        leaf: duration("tls.certificateDuration", &spec.tls.certificate_duration)?,
        renew_before: duration("tls.renewBefore", &spec.tls.renew_before)?,
        ca_overlap: grace,
    };
    if lifetimes.renew_before >= lifetimes.leaf {
        return Err(Invalid::spec(format!(
            "tls.renewBefore ({}) must be shorter than tls.certificateDuration ({}), or \
             certificates would be renewed continuously",
            spec.tls.renew_before, spec.tls.certificate_duration
        )));
    }
    if lifetimes.leaf > lifetimes.ca {
        return Err(Invalid::spec(format!(
            "tls.certificateDuration ({}) must not exceed tls.caDuration ({})",
            spec.tls.certificate_duration, spec.tls.ca_duration
        )));
    }
    if spec.training.mode == TrainingMode::Async {
        return Err(Invalid::spec(
            "training.mode async is not implemented by the coordinator yet; use sync",
        ));
    }
    if !spec.tls.clients.is_empty() && spec.tls.mode != TlsMode::Operator {
        return Err(Invalid::spec(
            "tls.clients need tls.mode operator: client certificates are signed by the \
             operator's CA",
        ));
    }
    if let (AuthMode::Token, Some(reference)) = (spec.auth.mode, &spec.auth.token_secret_ref) {
        let Some(secret) = &observed.token_secret_ref else {
            return Err(Invalid::credentials(
                "TokenSecretNotFound",
                format!(
                    "auth.tokenSecretRef: Secret {} not found in this namespace; create it with \
                     a `{TOKEN_KEY}` key",
                    reference.name
                ),
            ));
        };
        let token = secret_strings(secret).remove(TOKEN_KEY).unwrap_or_default();
        if token.trim().len() < 16 {
            return Err(Invalid::credentials(
                "TokenSecretInvalid",
                format!(
                    "auth.tokenSecretRef: Secret {} needs a `{TOKEN_KEY}` key of at least 16 \
                     characters",
                    reference.name
                ),
            ));
        }
    }
    if spec.tls.mode == TlsMode::Secret {
        let name = spec.tls.secret_name.clone().unwrap_or_default();
        let Some(secret) = &observed.tls_secret_ref else {
            return Err(Invalid::credentials(
                "TlsSecretNotFound",
                format!("tls.secretName: Secret {name} not found in this namespace"),
            ));
        };
        let data = secret_strings(secret);
        if !data.contains_key(TLS_CERT_KEY) || !data.contains_key(TLS_KEY_KEY) {
            return Err(Invalid::credentials(
                "TlsSecretInvalid",
                format!("tls.secretName: Secret {name} needs `{TLS_CERT_KEY}` and `{TLS_KEY_KEY}`"),
            ));
        }
    }
    Ok(ValidatedSpec { grace, lifetimes })
}
