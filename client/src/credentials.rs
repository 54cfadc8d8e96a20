//! The worker bundle the operator publishes, read from the directory it is mounted at:
//! `<server>-worker-credentials` holds `token`, `ca.crt` and `endpoints.json`; a named client's
//! `<server>-client-<name>` holds `tls.crt`, `tls.key`, `ca.crt` and `endpoints.json` and no
//! token (its certificate authenticates it, for worker ids `<name>` and `<name>.<suffix>`).

use std::path::Path;

use serde::Deserialize;

use crate::coordinator_client::{ClientConfig, ClientError, TokenSource};

/// File of the bearer token in a worker bundle.
pub const TOKEN_FILE: &str = "token";
/// File of the CA bundle to trust.
pub const CA_FILE: &str = "ca.crt";
/// File of the client certificate (named clients only).
pub const CLIENT_CERT_FILE: &str = "tls.crt";
/// File of the client certificate's key.
pub const CLIENT_KEY_FILE: &str = "tls.key";
/// File of the coordinator's endpoints.
pub const ENDPOINTS_FILE: &str = "endpoints.json";

/// `endpoints.json`: where the coordinator's planes are reachable.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Endpoints {
    /// Control-plane URL.
    pub control: String,
    /// Bulk-plane URL (absent when the bulk plane is disabled).
    #[serde(default)]
    pub bulk: Option<String>,
}

impl ClientConfig {
    /// Settings from a mounted worker bundle: the control URL from `endpoints.json`, the token
    /// as a file (re-read after a 401, so a rotated Secret is picked up), the CA, and the
    /// client certificate when the bundle has one. Files a bundle lacks are simply not used.
    pub fn from_credentials_dir(dir: &Path) -> Result<Self, ClientError> {
        let endpoints_path = dir.join(ENDPOINTS_FILE);
        let text = std::fs::read_to_string(&endpoints_path).map_err(|e| {
            ClientError::Config(format!("cannot read {}: {e}", endpoints_path.display()))
        })?;
        let endpoints: Endpoints = serde_json::from_str(&text).map_err(|e| {
            ClientError::Config(format!("{} is not valid: {e}", endpoints_path.display()))
        })?;
        let mut config = Self::new(endpoints.control);
        let token = dir.join(TOKEN_FILE);
        config.token = if token.is_file() {
            TokenSource::File(token)
        } else {
            TokenSource::None
        };
        let ca = dir.join(CA_FILE);
        config.ca_file = ca.is_file().then_some(ca);
        let (cert, key) = (dir.join(CLIENT_CERT_FILE), dir.join(CLIENT_KEY_FILE));
        config.client_identity = (cert.is_file() && key.is_file()).then_some((cert, key));
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        dir
    }

    /// A worker bundle gives the control URL, a token file, the CA and no client identity.
    #[test]
    fn worker_bundle_configures_url_token_file_and_ca() {
        let dir = bundle(&[
            (
                ENDPOINTS_FILE,
                r#"{"control": "https://llm-control.ml.svc:8512", "bulk": "https://llm-bulk.ml.svc:8513"}"#,
            ),
            (TOKEN_FILE, "secret\n"),
            (CA_FILE, "-----BEGIN CERTIFICATE-----"),
        ]);
        let config = ClientConfig::from_credentials_dir(dir.path()).unwrap();
        assert_eq!(config.url, "https://llm-control.ml.svc:8512");
        assert!(matches!(&config.token, TokenSource::File(p) if p == &dir.path().join(TOKEN_FILE)));
        assert_eq!(config.ca_file, Some(dir.path().join(CA_FILE)));
        assert_eq!(config.client_identity, None);
    }

    /// A named client's bundle has no token: the certificate and key are its credential.
    #[test]
    fn client_bundle_without_a_token_authenticates_by_its_certificate() {
        let dir = bundle(&[
            (ENDPOINTS_FILE, r#"{"control": "https://10.0.0.1:8512"}"#),
            (CA_FILE, "ca"),
            (CLIENT_CERT_FILE, "cert"),
            (CLIENT_KEY_FILE, "key"),
        ]);
        let config = ClientConfig::from_credentials_dir(dir.path()).unwrap();
        assert!(matches!(config.token, TokenSource::None));
        assert_eq!(
            config.client_identity,
            Some((
                dir.path().join(CLIENT_CERT_FILE),
                dir.path().join(CLIENT_KEY_FILE)
            ))
        );
    }

    /// A bundle without `endpoints.json` is a configuration error naming the file.
    #[test]
    fn missing_endpoints_is_a_clear_error() {
        let dir = bundle(&[(TOKEN_FILE, "secret")]);
        let error = ClientConfig::from_credentials_dir(dir.path()).unwrap_err();
        assert!(error.to_string().contains(ENDPOINTS_FILE), "{error}");
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
