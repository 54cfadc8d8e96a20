//! Validate: what the schema and CEL rules cannot check — durations that must relate to each
//! other, and Secrets the spec refers to. A failure becomes a status condition with a reason,
//! never a crash.

use jiff::SignedDuration;

use diloco_crds::{
    AuthMode, ClientAuth, DiLoCoServer, ModelSpec, TlsMode, TrainingMode, parse_duration,
};

use crate::reconcile::certificates::{CA_CERT_KEY, Lifetimes, TLS_CERT_KEY, TLS_KEY_KEY};
use crate::reconcile::invalid::Invalid;
use crate::reconcile::load::Observed;
use crate::reconcile::token::{TOKEN_KEY, secret_strings};

/// The type of a Secret holding a ServiceAccount's API token.
const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
/// A user-supplied token must be at least this long.
pub const MIN_TOKEN_CHARS: usize = 32;
/// … use at least this many different characters …
const MIN_TOKEN_DISTINCT_CHARS: usize = 10;
/// … and carry at least this much character entropy per character (random hex: ~3.7-4 bits).
const MIN_TOKEN_BITS_PER_CHAR: f64 = 3.0;

/// … and at least this share of its 4-character windows must be distinct.
const MIN_TOKEN_NOVEL_WINDOWS: f64 = 0.75;

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
    if let Some(model) = &spec.model {
        check_model_paths(model)?;
    }
    if !spec.tls.clients.is_empty() && spec.tls.mode != TlsMode::Operator {
        return Err(Invalid::spec(
            "tls.clients need tls.mode operator: client certificates are signed by the \
             operator's CA",
        ));
    }
    let np = &spec.network_policy;
    for (field, peers) in [
        ("controlFrom", &np.control_from),
        ("bulkFrom", &np.bulk_from),
        ("metricsFrom", &np.metrics_from),
    ] {
        if peers.as_ref().is_some_and(Vec::is_empty) {
            return Err(Invalid::spec(format!(
                "networkPolicy.{field}: an empty list would admit every source; leave it out \
                 for the defaults or list the peers"
            )));
        }
    }
    // A ServiceAccount token Secret would put API credentials into a pod the spec's author
    // controls, whatever its labels say.
    for (field, secret) in [
        ("auth.tokenSecretRef", &observed.token_secret_ref),
        ("tls.secretName", &observed.tls_secret_ref),
        ("tls.clientCASecretRef", &observed.client_ca_secret_ref),
    ] {
        if let Some(secret) = secret
            && secret.type_.as_deref() == Some(SERVICE_ACCOUNT_TOKEN_TYPE)
        {
            return Err(Invalid::credentials(
                "ReferenceNotAllowed",
                format!(
                    "{field}: Secret {} is a ServiceAccount token; API credentials are never \
                     mounted into a coordinator",
                    secret.metadata.name.as_deref().unwrap_or_default()
                ),
            ));
        }
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
        if let Err(why) = token_strength(token.trim()) {
            return Err(Invalid::credentials(
                "TokenSecretInvalid",
                format!(
                    "auth.tokenSecretRef: the `{TOKEN_KEY}` key of Secret {} {why}; generate one \
                     with `openssl rand -hex 32`",
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
        if let Some(reference) = &spec.tls.client_ca_secret_ref {
            let has_ca = observed
                .client_ca_secret_ref
                .as_ref()
                .is_some_and(|s| secret_strings(s).contains_key(CA_CERT_KEY));
            if !has_ca {
                return Err(Invalid::credentials(
                    "ClientCASecretInvalid",
                    format!(
                        "tls.clientCASecretRef: Secret {} needs a `{CA_CERT_KEY}` key",
                        reference.name
                    ),
                ));
            }
        } else if spec.tls.client_auth == ClientAuth::Optional && !data.contains_key(CA_CERT_KEY) {
            return Err(Invalid::credentials(
                "TlsSecretInvalid",
                format!(
                    "tls.allowedClientNames: client certificates are verified against a CA, but \
                     Secret {name} has no `{CA_CERT_KEY}`; add it, set tls.clientCASecretRef, or \
                     set tls.clientAuth none"
                ),
            ));
        }
    }
    Ok(ValidatedSpec { grace, lifetimes })
}

/// The CRD's rules for `spec.model`, again: a CRD installed from an older chart lacks them, and
/// a path that climbs out of the model claim would reach the rest of the pod's files.
fn check_model_paths(model: &ModelSpec) -> Result<(), Invalid> {
    for (field, path) in [
        ("model.initialParameters", &model.initial_parameters),
        ("model.definition", &model.definition),
    ] {
        let Some(path) = path else { continue };
        let path = std::path::Path::new(path);
        if path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(Invalid::spec(format!(
                "{field} must not contain .. segments"
            )));
        }
        if model.claim_name.is_some() == path.is_absolute() {
            return Err(Invalid::spec(format!(
                "{field}: {} with model.claimName, {} without",
                "a path inside the claim (relative)", "an absolute path in the image"
            )));
        }
    }
    Ok(())
}

/// Whether a user-supplied bearer token looks like a secret rather than a word: long enough,
/// varied, and not repeating itself. A heuristic (it cannot tell a passphrase from random
/// text), but it refuses the guessable tokens people type by hand.
pub fn token_strength(token: &str) -> Result<(), String> {
    let chars: Vec<char> = token.chars().collect();
    if chars.len() < MIN_TOKEN_CHARS {
        return Err(format!(
            "has {} characters; at least {MIN_TOKEN_CHARS} are needed",
            chars.len()
        ));
    }
    if chars.iter().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters".into());
    }
    let mut counts = std::collections::BTreeMap::new();
    for c in &chars {
        *counts.entry(*c).or_insert(0usize) += 1;
    }
    if counts.len() < MIN_TOKEN_DISTINCT_CHARS {
        return Err(format!(
            "uses only {} different characters; at least {MIN_TOKEN_DISTINCT_CHARS} are needed",
            counts.len()
        ));
    }
    let total = chars.len() as f64;
    let bits_per_char: f64 = counts
        .values()
        .map(|&n| {
            let p = n as f64 / total;
            -p * p.log2()
        })
        .sum();
    if bits_per_char < MIN_TOKEN_BITS_PER_CHAR {
        return Err(format!(
            "is too predictable ({bits_per_char:.1} bits per character; at least \
             {MIN_TOKEN_BITS_PER_CHAR} are needed)"
        ));
    }
    // Repetition (`password-password-…`, `abcabc…`): most 4-character windows of a random
    // token are new; a repeated word's are mostly seen before.
    let windows: Vec<&[char]> = chars.windows(4).collect();
    let novel = windows
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if (novel as f64) < MIN_TOKEN_NOVEL_WINDOWS * windows.len() as f64 {
        return Err("repeats itself".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Model paths stay inside the claim (relative, no `..`) or name the image (absolute).
    #[test]
    fn model_paths_that_leave_the_claim_or_mix_up_claim_and_image_are_refused() {
        let model = |claim: Option<&str>, parameters: &str| ModelSpec {
            claim_name: claim.map(str::to_string),
            initial_parameters: Some(parameters.into()),
            definition: None,
        };
        assert!(check_model_paths(&model(Some("weights"), "ckpt/step-10")).is_ok());
        assert!(check_model_paths(&model(None, "/models/llm")).is_ok());
        for (claim, path) in [
            (Some("weights"), "../../var/run/diloco/token"),
            (Some("weights"), "ckpt/../../etc"),
            (Some("weights"), "/etc/diloco/tls"),
            (None, "relative/in/image"),
            (None, "/models/../etc"),
        ] {
            let refused = check_model_paths(&model(claim, path)).unwrap_err();
            assert!(
                refused.message.contains("model.initialParameters"),
                "{path}: {}",
                refused.message
            );
        }
    }

    /// Even labelled referable, a ServiceAccount token Secret is never used as a bearer.
    #[test]
    fn a_service_account_token_secret_is_never_a_reference() {
        let server: DiLoCoServer = serde_json::from_value(serde_json::json!({
            "apiVersion": "diloco.dev/v1alpha1", "kind": "DiLoCoServer",
            "metadata": {"name": "llm", "namespace": "ml"},
            "spec": {"image": "x", "auth": {"tokenSecretRef": {"name": "sa-token"}}},
        }))
        .unwrap();
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "sa-token", "labels": {"diloco.dev/referable": "true"}},
            "type": "kubernetes.io/service-account-token",
            "stringData": {"token": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
        }))
        .unwrap();
        let observed = Observed {
            token_secret_ref: Some(secret),
            ..Observed::default()
        };
        let refused = validate(&server, &observed).unwrap_err();
        assert_eq!(refused.reason, "ReferenceNotAllowed");
        assert!(
            refused.message.contains("ServiceAccount token"),
            "{refused:?}"
        );
    }

    #[test]
    fn random_tokens_pass_and_guessable_ones_are_refused() {
        assert_eq!(
            token_strength(&"0123456789abcdef".repeat(4)),
            Err("repeats itself".into())
        );
        assert_eq!(
            token_strength("password-password-password-12345"),
            Err("repeats itself".into())
        );
        assert!(
            token_strength("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
                .is_ok()
        );
        assert!(token_strength("Xq3-vT9_kLm2pR8sW4zN6bY1cH7dJ5fG").is_ok());
        let short = token_strength("9f86d081884c7d65").unwrap_err();
        assert!(short.contains("16 characters"), "{short}");
        assert!(
            token_strength(&"a".repeat(40))
                .unwrap_err()
                .contains("different characters")
        );
        assert!(
            token_strength("aaaaaaaaaaaaaaaaaaaaaaaaaaaaabcdefghijkl")
                .unwrap_err()
                .contains("predictable")
        );
        assert!(
            token_strength("9f86d081884c7d659a2feaa0 55ad015a3bf4f1b")
                .unwrap_err()
                .contains("whitespace")
        );
    }
}
