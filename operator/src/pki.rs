//! Minting and reading certificates with rcgen: a per-server CA (ECDSA P-256) and the leaf
//! certificates it signs. Pure functions of their inputs and the clock passed in; deciding
//! *when* to mint is [`crate::reconcile::certificates`]'s job.

use jiff::{SignedDuration, Timestamp};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Certificates start this long before they are minted, so a node whose clock lags a little
/// behind the operator's still accepts them.
const BACKDATE: SignedDuration = SignedDuration::from_secs(5 * 60);

/// A certificate and its private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyedCertificate {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (never logged: `Debug` leaves it out).
    pub key_pem: String,
}

impl std::fmt::Debug for KeyedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedCertificate")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeafUsage {
    /// TLS server (the coordinator).
    Server,
    /// TLS client (workers, the operator's status poller).
    Client,
}

/// The subject of a leaf: a common name and, for servers, the DNS names and IP addresses it
/// answers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafSubject {
    pub common_name: String,
    pub names: Vec<String>,
    pub usage: LeafUsage,
}

impl LeafSubject {
    /// A stable hash of the subject, so a changed name list is noticed without parsing.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.common_name.as_bytes());
        for name in &self.names {
            hasher.update([0]);
            hasher.update(name.as_bytes());
        }
        hasher.update([self.usage as u8]);
        hex(&hasher.finalize())
    }
}

/// A certificate authority that can sign leaves.
pub struct CertificateAuthority {
    keyed: KeyedCertificate,
    issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// A new self-signed CA named `common_name`, valid for `validity` from `now`.
    pub fn generate(common_name: &str, validity: SignedDuration, now: Timestamp) -> Result<Self> {
        let key = KeyPair::generate().map_err(pki_error("generate a CA key"))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, validity, now)?;
        let cert = params
            .self_signed(&key)
            .map_err(pki_error("self-sign the CA"))?;
        let keyed = KeyedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        Self::from_pem(&keyed)
    }

    /// The CA stored in a Secret.
    pub fn from_pem(keyed: &KeyedCertificate) -> Result<Self> {
        let key = KeyPair::from_pem(&keyed.key_pem).map_err(pki_error("read the CA key"))?;
        let issuer = Issuer::from_ca_cert_pem(&keyed.cert_pem, key)
            .map_err(pki_error("read the CA certificate"))?;
        Ok(Self {
            keyed: keyed.clone(),
            issuer,
        })
    }

    /// The CA certificate and key.
    pub fn keyed(&self) -> &KeyedCertificate {
        &self.keyed
    }

    /// SHA-256 of the CA certificate: recorded on each leaf so a CA change re-issues it.
    pub fn fingerprint(&self) -> Result<String> {
        certificate_fingerprint(&self.keyed.cert_pem)
    }

    /// A leaf for `subject`, valid for `validity` from `now` (never past the CA's own end).
    pub fn issue(
        &self,
        subject: &LeafSubject,
        validity: SignedDuration,
        now: Timestamp,
    ) -> Result<KeyedCertificate> {
        let key = KeyPair::generate().map_err(pki_error("generate a leaf key"))?;
        let mut params = CertificateParams::new(subject.names.clone())
            .map_err(pki_error("use the certificate names"))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, subject.common_name.as_str());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match subject.usage {
            LeafUsage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            LeafUsage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        let ca_end = certificate_not_after(&self.keyed.cert_pem)?;
        let validity = validity.min(ca_end.duration_since(now));
        set_validity(&mut params, validity, now)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(pki_error("sign a leaf certificate"))?;
        Ok(KeyedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn set_validity(
    params: &mut CertificateParams,
    validity: SignedDuration,
    now: Timestamp,
) -> Result<()> {
    let to_time = |t: Timestamp| {
        time::OffsetDateTime::from_unix_timestamp(t.as_second())
            .map_err(|e| Error::pki(format!("represent {t} as a certificate date"), e))
    };
    let not_after = now
        .checked_add(validity)
        .map_err(|e| Error::pki("compute the end of validity", e))?;
    params.not_before = to_time(now - BACKDATE)?;
    params.not_after = to_time(not_after)?;
    // Random 128-bit serials, as RFC 5280 recommends for unpredictability.
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| Error::pki_without_source("draw a random serial number"))?;
    serial[0] &= 0x7f;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(())
}

/// The end of a PEM certificate's validity.
pub fn certificate_not_after(pem: &str) -> Result<Timestamp> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| Error::pki("parse a PEM certificate", e))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| Error::pki("parse an X.509 certificate", e))?;
    Timestamp::from_second(cert.validity().not_after.timestamp())
        .map_err(|e| Error::pki("read a certificate's end of validity", e))
}

/// SHA-256 of the DER of the first certificate in `pem`, hex.
pub fn certificate_fingerprint(pem: &str) -> Result<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| Error::pki("parse a PEM certificate", e))?;
    Ok(hex(&Sha256::digest(&pem.contents)))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn pki_error(action: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |e| Error::pki(action, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-12-01T00:00:00Z".parse().unwrap()
    }

    fn server_subject() -> LeafSubject {
        LeafSubject {
            common_name: "llm-control".into(),
            names: vec!["llm-control.ns.svc".into(), "10.0.0.7".into()],
            usage: LeafUsage::Server,
        }
    }

    #[test]
    fn a_leaf_is_signed_by_the_ca_and_carries_its_names_and_validity() {
        let ca =
            CertificateAuthority::generate("llm CA", SignedDuration::from_hours(24 * 365), now())
                .unwrap();
        let leaf = ca
            .issue(&server_subject(), SignedDuration::from_hours(24), now())
            .unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(leaf.cert_pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();
        let (_, ca_pem) = x509_parser::pem::parse_x509_pem(ca.keyed().cert_pem.as_bytes()).unwrap();
        let ca_cert = ca_pem.parse_x509().unwrap();
        assert_eq!(cert.issuer(), ca_cert.subject());
        assert_eq!(authority_key_id(&cert), subject_key_id(&ca_cert));
        let sans = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = sans
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            names,
            ["DNSName(llm-control.ns.svc)", "IPAddress(0a:00:00:07)"]
        );
        assert_eq!(
            certificate_not_after(&leaf.cert_pem).unwrap(),
            now() + SignedDuration::from_hours(24)
        );
        assert!(ca_cert.is_ca());
        assert!(!cert.is_ca());
    }

    #[test]
    fn a_leaf_never_outlives_its_ca() {
        let ca = CertificateAuthority::generate("short CA", SignedDuration::from_hours(1), now())
            .unwrap();
        let leaf = ca
            .issue(&server_subject(), SignedDuration::from_hours(24), now())
            .unwrap();
        assert_eq!(
            certificate_not_after(&leaf.cert_pem).unwrap(),
            now() + SignedDuration::from_hours(1)
        );
    }

    #[test]
    fn a_ca_read_back_from_pem_signs_like_the_original() {
        let ca = CertificateAuthority::generate("llm CA", SignedDuration::from_hours(48), now())
            .unwrap();
        let reloaded = CertificateAuthority::from_pem(ca.keyed()).unwrap();
        assert_eq!(reloaded.fingerprint().unwrap(), ca.fingerprint().unwrap());
        let leaf = reloaded
            .issue(&server_subject(), SignedDuration::from_hours(1), now())
            .unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(leaf.cert_pem.as_bytes()).unwrap();
        let (_, ca_pem) = x509_parser::pem::parse_x509_pem(ca.keyed().cert_pem.as_bytes()).unwrap();
        assert_eq!(
            authority_key_id(&pem.parse_x509().unwrap()),
            subject_key_id(&ca_pem.parse_x509().unwrap())
        );
    }

    fn authority_key_id(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<u8> {
        cert.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
            .expect("an authority key identifier")
    }

    fn subject_key_id(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<u8> {
        cert.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(ski) => {
                    Some(ski.0.to_vec())
                }
                _ => None,
            })
            .expect("a subject key identifier")
    }

    #[test]
    fn debug_output_never_shows_a_private_key() {
        let ca =
            CertificateAuthority::generate("llm CA", SignedDuration::from_hours(1), now()).unwrap();
        let shown = format!("{:?}", ca.keyed());
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn subject_fingerprints_change_with_any_name() {
        let a = server_subject();
        let mut b = server_subject();
        b.names.push("extra.example.com".into());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), server_subject().fingerprint());
    }
}
