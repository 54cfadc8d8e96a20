//! The bearer token: get-or-create, rotated exactly once per new `diloco.dev/rotate-token`
//! value. Pure: the existing Secret, the annotation and the clock in, the Secret's data out.
//!
//! The handled nonce is stored on the token Secret itself (and mirrored in status), so a
//! rotation that was written is never repeated, even if the operator dies before status.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;

use crate::error::{Error, Result};
use crate::names::HANDLED_NONCE_ANNOTATION;
use crate::pki::hex;

/// Key of the current token.
pub const TOKEN_KEY: &str = "token";
/// Key of the token replaced by the last rotation.
pub const PREVIOUS_TOKEN_KEY: &str = "previous-token";
/// Key of the RFC 3339 time until which the previous token is accepted.
pub const PREVIOUS_VALID_UNTIL_KEY: &str = "previous-valid-until";
/// Annotation on the token Secret: when it was last rotated.
pub const ROTATED_AT_ANNOTATION: &str = "diloco.dev/rotated-at";

/// What this reconcile does to the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenAction {
    /// None existed: a new one was minted.
    Created,
    /// A new rotation nonce: a new token, the old one valid for the grace period.
    Rotated,
    /// The grace period of the previous token ended; it was removed.
    PreviousExpired,
}

/// The token Secret as it should be.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenPlan {
    /// `token`, and during a grace period `previous-token` and `previous-valid-until`.
    pub data: BTreeMap<String, String>,
    /// The rotation nonce this token answers.
    pub handled_nonce: Option<String>,
    /// When the token was last rotated.
    pub rotated_at: Option<Timestamp>,
    /// Until when the previous token is accepted.
    pub previous_valid_until: Option<Timestamp>,
    /// What changed in this reconcile.
    pub action: Option<TokenAction>,
}

impl std::fmt::Debug for TokenPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPlan")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("handled_nonce", &self.handled_nonce)
            .field("previous_valid_until", &self.previous_valid_until)
            .field("action", &self.action)
            .finish()
    }
}

impl TokenPlan {
    /// The current token.
    pub fn token(&self) -> &str {
        self.data
            .get(TOKEN_KEY)
            .map(String::as_str)
            .unwrap_or_default()
    }
}

/// A fresh 256-bit token, 64 hex characters.
pub fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| Error::pki_without_source("draw random bytes for a token"))?;
    Ok(hex(&bytes))
}

/// Decides the token Secret's content from what exists, the rotation annotation's value
/// (`nonce`) and the grace period.
pub fn plan_token(
    existing: Option<&Secret>,
    nonce: Option<&str>,
    grace: SignedDuration,
    now: Timestamp,
    mint: impl FnOnce() -> Result<String>,
) -> Result<TokenPlan> {
    let data = existing.map(secret_strings).unwrap_or_default();
    let annotations = existing.and_then(|s| s.metadata.annotations.as_ref());
    let handled = annotations
        .and_then(|a| a.get(HANDLED_NONCE_ANNOTATION))
        .cloned();
    let rotated_at = annotations
        .and_then(|a| a.get(ROTATED_AT_ANNOTATION))
        .and_then(|t| t.parse().ok());
    let current = data
        .get(TOKEN_KEY)
        .filter(|t| !t.trim().is_empty())
        .cloned();

    let Some(current) = current else {
        return Ok(TokenPlan {
            data: BTreeMap::from([(TOKEN_KEY.to_string(), mint()?)]),
            // A nonce present at creation is already satisfied by the new token.
            handled_nonce: nonce.map(str::to_string),
            rotated_at: None,
            previous_valid_until: None,
            action: Some(TokenAction::Created),
        });
    };
    if let Some(nonce) = nonce.filter(|n| Some(*n) != handled.as_deref()) {
        let until = now + grace;
        return Ok(TokenPlan {
            data: BTreeMap::from([
                (TOKEN_KEY.to_string(), mint()?),
                (PREVIOUS_TOKEN_KEY.to_string(), current),
                (PREVIOUS_VALID_UNTIL_KEY.to_string(), until.to_string()),
            ]),
            handled_nonce: Some(nonce.to_string()),
            rotated_at: Some(now),
            previous_valid_until: Some(until),
            action: Some(TokenAction::Rotated),
        });
    }
    let previous_valid_until: Option<Timestamp> = data
        .get(PREVIOUS_VALID_UNTIL_KEY)
        .and_then(|t| t.parse().ok());
    let previous = data.get(PREVIOUS_TOKEN_KEY).cloned();
    let mut plan = TokenPlan {
        data: BTreeMap::from([(TOKEN_KEY.to_string(), current)]),
        handled_nonce: handled,
        rotated_at,
        previous_valid_until: None,
        action: None,
    };
    match (previous, previous_valid_until) {
        (Some(previous), Some(until)) if until > now => {
            plan.data.insert(PREVIOUS_TOKEN_KEY.into(), previous);
            plan.data
                .insert(PREVIOUS_VALID_UNTIL_KEY.into(), until.to_string());
            plan.previous_valid_until = Some(until);
        }
        (Some(_), _) => plan.action = Some(TokenAction::PreviousExpired),
        (None, _) => {}
    }
    Ok(plan)
}

/// A Secret's data as UTF-8 strings (keys that are not UTF-8 are skipped).
pub fn secret_strings(secret: &Secret) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in secret.data.iter().flatten() {
        if let Ok(text) = String::from_utf8(value.0.clone()) {
            out.insert(key.clone(), text);
        }
    }
    for (key, value) in secret.string_data.iter().flatten() {
        out.insert(key.clone(), value.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn now() -> Timestamp {
        "2026-12-01T12:00:00Z".parse().unwrap()
    }

    fn grace() -> SignedDuration {
        SignedDuration::from_mins(15)
    }

    fn secret_from(plan: &TokenPlan) -> Secret {
        let mut annotations = BTreeMap::new();
        if let Some(nonce) = &plan.handled_nonce {
            annotations.insert(HANDLED_NONCE_ANNOTATION.to_string(), nonce.clone());
        }
        Secret {
            data: Some(
                plan.data
                    .iter()
                    .map(|(k, v)| (k.clone(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            metadata: ObjectMeta {
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        }
    }

    #[test]
    fn a_missing_token_is_minted_as_256_random_bits() {
        let plan = plan_token(None, None, grace(), now(), random_token).unwrap();
        assert_eq!(plan.action, Some(TokenAction::Created));
        assert_eq!(plan.token().len(), 64);
        assert!(plan.token().bytes().all(|b| b.is_ascii_hexdigit()));
        let other = plan_token(None, None, grace(), now(), random_token).unwrap();
        assert_ne!(plan.token(), other.token());
    }

    #[test]
    fn an_existing_token_is_kept_whatever_the_clock() {
        let first = plan_token(None, Some("n1"), grace(), now(), random_token).unwrap();
        let later = now() + SignedDuration::from_hours(24 * 400);
        let again = plan_token(
            Some(&secret_from(&first)),
            Some("n1"),
            grace(),
            later,
            || panic!("must not mint"),
        )
        .unwrap();
        assert_eq!(again.data, first.data);
        assert_eq!(again.action, None);
    }

    #[test]
    fn a_new_nonce_rotates_once_and_keeps_the_old_token_for_the_grace_period() {
        let first = plan_token(None, None, grace(), now(), random_token).unwrap();
        let rotated = plan_token(
            Some(&secret_from(&first)),
            Some("n2"),
            grace(),
            now(),
            random_token,
        )
        .unwrap();
        assert_eq!(rotated.action, Some(TokenAction::Rotated));
        assert_ne!(rotated.token(), first.token());
        assert_eq!(rotated.data[PREVIOUS_TOKEN_KEY], first.token());
        assert_eq!(
            rotated.data[PREVIOUS_VALID_UNTIL_KEY],
            "2026-12-01T12:15:00Z"
        );
        let same_nonce = plan_token(
            Some(&secret_from(&rotated)),
            Some("n2"),
            grace(),
            now() + SignedDuration::from_mins(1),
            || panic!("the same nonce must not rotate again"),
        )
        .unwrap();
        assert_eq!(same_nonce.data, rotated.data);
        assert_eq!(same_nonce.action, None);
    }

    #[test]
    fn the_previous_token_is_dropped_after_the_grace_period() {
        let first = plan_token(None, None, grace(), now(), random_token).unwrap();
        let rotated = plan_token(
            Some(&secret_from(&first)),
            Some("n"),
            grace(),
            now(),
            random_token,
        )
        .unwrap();
        let after = now() + SignedDuration::from_mins(16);
        let plan = plan_token(
            Some(&secret_from(&rotated)),
            Some("n"),
            grace(),
            after,
            random_token,
        )
        .unwrap();
        assert_eq!(plan.action, Some(TokenAction::PreviousExpired));
        assert_eq!(plan.data.keys().collect::<Vec<_>>(), [TOKEN_KEY]);
        assert_eq!(plan.token(), rotated.token());
    }

    #[test]
    fn debug_output_never_shows_a_token() {
        let plan = plan_token(None, None, grace(), now(), random_token).unwrap();
        let shown = format!("{plan:?}");
        assert!(!shown.contains(plan.token()), "{shown}");
    }
}
