//! Throwaway certificate authorities and certificates for TLS tests (rcgen).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A certificate and its private key, PEM-encoded.
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

/// A certificate authority that signs server and client certificates.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A new self-signed CA called `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        Self { issuer }
    }

    /// The CA certificate (PEM), what clients and servers trust.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    fn sign(&self, names: &[&str], common_name: &str, usage: ExtendedKeyUsagePurpose) -> Pem {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed");
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn server(&self, names: &[&str]) -> Pem {
        self.sign(
            names,
            names.first().copied().unwrap_or("server"),
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with common name `common_name`.
    pub fn client(&self, common_name: &str) -> Pem {
        self.sign(&[], common_name, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// A reqwest client trusting `ca`, presenting `identity` (a client certificate) if given.
pub fn https_client(ca: &TestCa, identity: Option<&Pem>) -> reqwest::Client {
    diloco_client::coordinator_client::install_crypto_provider();
    let root = reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).expect("the CA parses");
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(root);
    if let Some(identity) = identity {
        let pem = format!("{}\n{}", identity.cert, identity.key);
        builder = builder
            .identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("the identity parses"));
    }
    builder.build().expect("a reqwest client builds")
}
