//! The PKI of one server: its CA and the leaves it signs, get-or-create, renewed at
//! `notAfter − renewBefore`, re-issued on a new `diloco.dev/rotate-certificates` value, and
//! rolled over to a new CA on a new `diloco.dev/rotate-ca` value (the old CA stays in the
//! trust bundle `ca.crt` for the overlap period, so peers that still hold it keep working
//! while the new leaves propagate). Pure apart from key generation: existing Secrets, nonces
//! and the clock in, the Secrets' content out.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Secret;

use crate::error::Result;
use crate::names::{HANDLED_NONCE_ANNOTATION, ISSUER_ANNOTATION, SUBJECT_ANNOTATION};
use crate::pki::{
    CertificateAuthority, KeyedCertificate, LeafSubject, certificate_fingerprint,
    certificate_not_after,
};
use crate::reconcile::token::secret_strings;

/// `kubernetes.io/tls` keys (the contract's credential file names).
pub use diloco_contract::credentials::{
    CA_CERT as CA_CERT_KEY, TLS_CERT as TLS_CERT_KEY, TLS_KEY as TLS_KEY_KEY,
};
/// Annotation on the CA Secret: until when the previous CA stays in the trust bundle.
pub const PREVIOUS_CA_VALID_UNTIL_ANNOTATION: &str = "diloco.dev/previous-ca-valid-until";

/// Lifetimes, from the spec.
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    pub ca: SignedDuration,
    pub leaf: SignedDuration,
    pub renew_before: SignedDuration,
    /// How long a replaced CA stays trusted.
    pub ca_overlap: SignedDuration,
}

/// Which leaf.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LeafRole {
    /// The coordinator's server certificate.
    Server,
    /// The operator's own client certificate (status polling).
    Operator,
    /// The console's client certificate (its proxy to the coordinator), when a console is
    /// configured.
    Console,
    /// A `spec.tls.clients` entry.
    Client(String),
}

/// Existing Secrets and desired subjects.
pub struct PkiInputs<'a> {
    pub ca_secret: Option<&'a Secret>,
    pub leaves: BTreeMap<LeafRole, (LeafSubject, Option<&'a Secret>)>,
    pub rotate_certificates_nonce: Option<&'a str>,
    pub rotate_ca_nonce: Option<&'a str>,
    pub lifetimes: Lifetimes,
    pub ca_common_name: String,
}

/// The CA as it should be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCa {
    pub keyed: KeyedCertificate,
    /// PEM bundle peers trust: the current CA, plus the previous one during an overlap.
    pub trust_bundle: String,
    pub handled_nonce: Option<String>,
    pub previous_valid_until: Option<Timestamp>,
    pub not_after: Timestamp,
}

/// A leaf as it should be stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredLeaf {
    pub keyed: KeyedCertificate,
    pub issuer_fingerprint: String,
    pub subject_fingerprint: String,
    pub handled_nonce: Option<String>,
    pub not_after: Timestamp,
}

/// A credential action, for events and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateAction {
    CaCreated,
    CaRotated,
    CaPreviousExpired,
    LeafIssued {
        role: LeafRole,
        reason: &'static str,
    },
}

/// The whole PKI after this reconcile.
#[derive(Clone, Debug)]
pub struct PkiPlan {
    pub ca: StoredCa,
    pub leaves: BTreeMap<LeafRole, StoredLeaf>,
    pub actions: Vec<CertificateAction>,
    /// The next moment something must be renewed or dropped.
    pub next_change: Timestamp,
}

impl PkiPlan {
    /// The server leaf's end of validity.
    pub fn server_not_after(&self) -> Option<Timestamp> {
        self.leaves.get(&LeafRole::Server).map(|l| l.not_after)
    }
}

/// Decides the CA and every leaf.
pub fn plan_pki(inputs: PkiInputs<'_>, now: Timestamp) -> Result<PkiPlan> {
    let lifetimes = inputs.lifetimes;
    let mut actions = Vec::new();
    let ca = plan_ca(&inputs, now, &mut actions)?;
    let authority = CertificateAuthority::from_pem(&ca.keyed)?;
    let issuer_fingerprint = authority.fingerprint()?;
    let mut leaves = BTreeMap::new();
    for (role, (subject, existing)) in &inputs.leaves {
        let existing = existing.map(read_leaf);
        let reason = match &existing {
            None => Some("missing"),
            Some(None) => Some("unreadable"),
            Some(Some(leaf)) if leaf.issuer_fingerprint != issuer_fingerprint => {
                Some("new certificate authority")
            }
            Some(Some(leaf)) if leaf.subject_fingerprint != subject.fingerprint() => {
                Some("names changed")
            }
            Some(Some(leaf)) if now >= leaf.not_after - lifetimes.renew_before => {
                Some("renewal due")
            }
            Some(Some(leaf))
                if inputs.rotate_certificates_nonce.is_some()
                    && leaf.handled_nonce.as_deref() != inputs.rotate_certificates_nonce =>
            {
                Some("rotation requested")
            }
            Some(Some(_)) => None,
        };
        let leaf = match (reason, existing.flatten()) {
            (None, Some(leaf)) => leaf,
            (reason, _) => {
                let keyed = authority.issue(subject, lifetimes.leaf, now)?;
                actions.push(CertificateAction::LeafIssued {
                    role: role.clone(),
                    reason: reason.unwrap_or("missing"),
                });
                StoredLeaf {
                    not_after: certificate_not_after(&keyed.cert_pem)?,
                    keyed,
                    issuer_fingerprint: issuer_fingerprint.clone(),
                    subject_fingerprint: subject.fingerprint(),
                    handled_nonce: inputs.rotate_certificates_nonce.map(str::to_string),
                }
            }
        };
        leaves.insert(role.clone(), leaf);
    }
    let next_change = leaves
        .values()
        .map(|l| l.not_after - lifetimes.renew_before)
        .chain([ca.not_after - lifetimes.renew_before])
        .chain(ca.previous_valid_until)
        .min()
        .unwrap_or(ca.not_after);
    Ok(PkiPlan {
        ca,
        leaves,
        actions,
        next_change,
    })
}

fn plan_ca(
    inputs: &PkiInputs<'_>,
    now: Timestamp,
    actions: &mut Vec<CertificateAction>,
) -> Result<StoredCa> {
    let lifetimes = inputs.lifetimes;
    let existing = inputs.ca_secret.and_then(read_ca);
    let generate = || {
        CertificateAuthority::generate(&inputs.ca_common_name, lifetimes.ca, now)
            .map(|ca| ca.keyed().clone())
    };
    let Some(existing) = existing else {
        let keyed = generate()?;
        actions.push(CertificateAction::CaCreated);
        return Ok(StoredCa {
            not_after: certificate_not_after(&keyed.cert_pem)?,
            trust_bundle: keyed.cert_pem.clone(),
            keyed,
            handled_nonce: inputs.rotate_ca_nonce.map(str::to_string),
            previous_valid_until: None,
        });
    };
    let nonce_is_new = inputs.rotate_ca_nonce.is_some()
        && existing.handled_nonce.as_deref() != inputs.rotate_ca_nonce;
    let expiring = now >= existing.not_after - lifetimes.renew_before;
    if nonce_is_new || expiring {
        let keyed = generate()?;
        actions.push(CertificateAction::CaRotated);
        let until = now + lifetimes.ca_overlap;
        return Ok(StoredCa {
            not_after: certificate_not_after(&keyed.cert_pem)?,
            trust_bundle: format!("{}{}", keyed.cert_pem, existing.keyed.cert_pem),
            keyed,
            handled_nonce: inputs
                .rotate_ca_nonce
                .map(str::to_string)
                .or(existing.handled_nonce),
            previous_valid_until: Some(until),
        });
    }
    match existing.previous_valid_until {
        Some(until) if until > now => Ok(existing),
        Some(_) => {
            actions.push(CertificateAction::CaPreviousExpired);
            Ok(StoredCa {
                trust_bundle: existing.keyed.cert_pem.clone(),
                previous_valid_until: None,
                ..existing
            })
        }
        None => Ok(StoredCa {
            trust_bundle: existing.keyed.cert_pem.clone(),
            ..existing
        }),
    }
}

fn read_keyed(secret: &Secret) -> Option<KeyedCertificate> {
    let data = secret_strings(secret);
    Some(KeyedCertificate {
        cert_pem: data.get(TLS_CERT_KEY)?.clone(),
        key_pem: data.get(TLS_KEY_KEY)?.clone(),
    })
}

fn annotation(secret: &Secret, key: &str) -> Option<String> {
    secret.metadata.annotations.as_ref()?.get(key).cloned()
}

/// The CA stored in `secret`, if it is whole and usable.
fn read_ca(secret: &Secret) -> Option<StoredCa> {
    let keyed = read_keyed(secret)?;
    CertificateAuthority::from_pem(&keyed).ok()?;
    let not_after = certificate_not_after(&keyed.cert_pem).ok()?;
    let trust_bundle = secret_strings(secret)
        .get(CA_CERT_KEY)
        .cloned()
        .unwrap_or_else(|| keyed.cert_pem.clone());
    Some(StoredCa {
        not_after,
        trust_bundle,
        keyed,
        handled_nonce: annotation(secret, HANDLED_NONCE_ANNOTATION),
        previous_valid_until: annotation(secret, PREVIOUS_CA_VALID_UNTIL_ANNOTATION)
            .and_then(|t| t.parse().ok()),
    })
}

/// The leaf stored in `secret`, if it is whole.
fn read_leaf(secret: &Secret) -> Option<StoredLeaf> {
    let keyed = read_keyed(secret)?;
    let not_after = certificate_not_after(&keyed.cert_pem).ok()?;
    certificate_fingerprint(&keyed.cert_pem).ok()?;
    Some(StoredLeaf {
        not_after,
        keyed,
        issuer_fingerprint: annotation(secret, ISSUER_ANNOTATION)?,
        subject_fingerprint: annotation(secret, SUBJECT_ANNOTATION)?,
        handled_nonce: annotation(secret, HANDLED_NONCE_ANNOTATION),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::LeafUsage;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn now() -> Timestamp {
        "2026-12-01T00:00:00Z".parse().unwrap()
    }

    fn lifetimes() -> Lifetimes {
        Lifetimes {
            ca: SignedDuration::from_hours(24 * 365),
            leaf: SignedDuration::from_hours(24 * 90),
            renew_before: SignedDuration::from_hours(24 * 15),
            ca_overlap: SignedDuration::from_mins(15),
        }
    }

    fn server_subject() -> LeafSubject {
        LeafSubject {
            common_name: "llm-control.ns.svc".into(),
            names: vec!["llm-control.ns.svc".into()],
            usage: LeafUsage::Server,
        }
    }

    fn tls_secret(keyed: &KeyedCertificate, annotations: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(BTreeMap::from([
                (
                    TLS_CERT_KEY.into(),
                    ByteString(keyed.cert_pem.clone().into_bytes()),
                ),
                (
                    TLS_KEY_KEY.into(),
                    ByteString(keyed.key_pem.clone().into_bytes()),
                ),
            ])),
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        }
    }

    /// Stores a plan the way the build step does, as (CA Secret, server leaf Secret).
    fn stored(plan: &PkiPlan) -> (Secret, Secret) {
        let mut ca = tls_secret(&plan.ca.keyed, &[]);
        let annotations = ca.metadata.annotations.get_or_insert_default();
        if let Some(n) = &plan.ca.handled_nonce {
            annotations.insert(HANDLED_NONCE_ANNOTATION.into(), n.clone());
        }
        if let Some(t) = plan.ca.previous_valid_until {
            annotations.insert(PREVIOUS_CA_VALID_UNTIL_ANNOTATION.into(), t.to_string());
        }
        ca.data.get_or_insert_default().insert(
            CA_CERT_KEY.into(),
            ByteString(plan.ca.trust_bundle.clone().into_bytes()),
        );
        let leaf = &plan.leaves[&LeafRole::Server];
        let mut leaf_annotations = vec![
            (ISSUER_ANNOTATION, leaf.issuer_fingerprint.as_str()),
            (SUBJECT_ANNOTATION, leaf.subject_fingerprint.as_str()),
        ];
        if let Some(n) = &leaf.handled_nonce {
            leaf_annotations.push((HANDLED_NONCE_ANNOTATION, n));
        }
        (ca, tls_secret(&leaf.keyed, &leaf_annotations))
    }

    fn plan<'a>(
        ca: Option<&'a Secret>,
        leaf: Option<&'a Secret>,
        rotate_certificates: Option<&'a str>,
        rotate_ca: Option<&'a str>,
        at: Timestamp,
    ) -> PkiPlan {
        plan_pki(
            PkiInputs {
                ca_secret: ca,
                leaves: BTreeMap::from([(LeafRole::Server, (server_subject(), leaf))]),
                rotate_certificates_nonce: rotate_certificates,
                rotate_ca_nonce: rotate_ca,
                lifetimes: lifetimes(),
                ca_common_name: "llm CA".into(),
            },
            at,
        )
        .unwrap()
    }

    #[test]
    fn first_reconcile_creates_the_ca_and_the_leaf_and_schedules_renewal() {
        let first = plan(None, None, None, None, now());
        assert_eq!(
            first.actions,
            [
                CertificateAction::CaCreated,
                CertificateAction::LeafIssued {
                    role: LeafRole::Server,
                    reason: "missing"
                }
            ]
        );
        assert_eq!(first.ca.trust_bundle, first.ca.keyed.cert_pem);
        assert_eq!(
            first.next_change,
            now() + SignedDuration::from_hours(24 * 75),
            "leaf end (90 d) minus renewBefore (15 d)"
        );
    }

    #[test]
    fn an_unchanged_pki_is_reused_byte_for_byte() {
        let first = plan(None, None, None, None, now());
        let (ca, leaf) = stored(&first);
        let later = now() + SignedDuration::from_hours(24 * 30);
        let again = plan(Some(&ca), Some(&leaf), None, None, later);
        assert!(again.actions.is_empty(), "{:?}", again.actions);
        assert_eq!(again.ca.keyed, first.ca.keyed);
        assert_eq!(again.leaves, first.leaves);
    }

    #[test]
    fn a_leaf_is_renewed_once_inside_renew_before_and_the_ca_stays() {
        let first = plan(None, None, None, None, now());
        let (ca, leaf) = stored(&first);
        let due = now() + SignedDuration::from_hours(24 * 76);
        let renewed = plan(Some(&ca), Some(&leaf), None, None, due);
        assert_eq!(
            renewed.actions,
            [CertificateAction::LeafIssued {
                role: LeafRole::Server,
                reason: "renewal due"
            }]
        );
        assert_eq!(renewed.ca.keyed, first.ca.keyed);
        assert_ne!(
            renewed.leaves[&LeafRole::Server].keyed,
            first.leaves[&LeafRole::Server].keyed
        );
    }

    #[test]
    fn rotate_certificates_reissues_leaves_once_per_value() {
        let first = plan(None, None, None, None, now());
        let (ca, leaf) = stored(&first);
        let rotated = plan(Some(&ca), Some(&leaf), Some("r1"), None, now());
        assert_eq!(rotated.actions.len(), 1);
        let (ca, leaf) = stored(&rotated);
        let again = plan(Some(&ca), Some(&leaf), Some("r1"), None, now());
        assert!(again.actions.is_empty(), "{:?}", again.actions);
    }

    #[test]
    fn rotate_ca_rolls_over_with_both_cas_trusted_then_drops_the_old_one() {
        let first = plan(None, None, None, None, now());
        let (ca, leaf) = stored(&first);
        let rolled = plan(Some(&ca), Some(&leaf), None, Some("ca1"), now());
        assert_eq!(rolled.actions[0], CertificateAction::CaRotated);
        assert!(matches!(
            rolled.actions[1],
            CertificateAction::LeafIssued {
                reason: "new certificate authority",
                ..
            }
        ));
        assert_eq!(
            rolled.ca.trust_bundle,
            format!("{}{}", rolled.ca.keyed.cert_pem, first.ca.keyed.cert_pem)
        );
        assert_eq!(rolled.next_change, now() + SignedDuration::from_mins(15));
        let (ca, leaf) = stored(&rolled);
        let same = plan(Some(&ca), Some(&leaf), None, Some("ca1"), now());
        assert!(same.actions.is_empty(), "{:?}", same.actions);
        let after = plan(
            Some(&ca),
            Some(&leaf),
            None,
            Some("ca1"),
            now() + SignedDuration::from_mins(16),
        );
        assert_eq!(after.actions, [CertificateAction::CaPreviousExpired]);
        assert_eq!(after.ca.trust_bundle, rolled.ca.keyed.cert_pem);
    }
}
