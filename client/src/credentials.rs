//! The worker bundle the operator publishes, read from the directory it is mounted at:
//! `<server>-worker-credentials` holds `token`, `ca.crt` and `endpoints.json`; a named client's
//! `<server>-client-<name>` holds `tls.crt`, `tls.key`, `ca.crt` and `endpoints.json` and no
//! token (its certificate authenticates it, for worker ids `<name>` and `<name>.<suffix>`).

use std::path::Path;

use diloco_contract::credentials::{CA_CERT, ENDPOINTS, Endpoints, TLS_CERT, TLS_KEY, TOKEN};

use crate::coordinator_client::{ClientConfig, ClientError, TokenSource};

impl ClientConfig {
    /// Settings from a mounted worker bundle: the control URL from `endpoints.json`, the token
    /// as a file (re-read after a 401, so a rotated Secret is picked up), the CA, and the
    /// client certificate when the bundle has one. Files a bundle lacks are simply not used.
    pub fn from_credentials_dir(dir: &Path) -> Result<Self, ClientError> {
        let endpoints_path = dir.join(ENDPOINTS);
        let text = std::fs::read_to_string(&endpoints_path).map_err(|e| {
            ClientError::Config(format!("cannot read {}: {e}", endpoints_path.display()))
        })?;
        let endpoints: Endpoints = serde_json::from_str(&text).map_err(|e| {
            ClientError::Config(format!("{} is not valid: {e}", endpoints_path.display()))
        })?;
        let mut config = Self::new(endpoints.control);
        let token = dir.join(TOKEN);
        config.token = if token.is_file() {
            TokenSource::File(token)
        } else {
            TokenSource::None
        };
        let ca = dir.join(CA_CERT);
        config.ca_file = ca.is_file().then_some(ca);
        let (cert, key) = (dir.join(TLS_CERT), dir.join(TLS_KEY));
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
                ENDPOINTS,
                r#"{"control": "https://llm-control.ml.svc:8512", "bulk": "https://llm-bulk.ml.svc:8513"}"#,
            ),
            (TOKEN, "secret\n"),
            (CA_CERT, "-----BEGIN CERTIFICATE-----"),
        ]);
        let config = ClientConfig::from_credentials_dir(dir.path()).unwrap();
        assert_eq!(config.url, "https://llm-control.ml.svc:8512");
        assert!(matches!(&config.token, TokenSource::File(p) if p == &dir.path().join(TOKEN)));
        assert_eq!(config.ca_file, Some(dir.path().join(CA_CERT)));
        assert_eq!(config.client_identity, None);
    }

    /// A named client's bundle has no token: the certificate and key are its credential.
    #[test]
    fn client_bundle_without_a_token_authenticates_by_its_certificate() {
        let dir = bundle(&[
            (ENDPOINTS, r#"{"control": "https://10.0.0.1:8512"}"#),
            (CA_CERT, "ca"),
            (TLS_CERT, "cert"),
            (TLS_KEY, "key"),
        ]);
        let config = ClientConfig::from_credentials_dir(dir.path()).unwrap();
        assert!(matches!(config.token, TokenSource::None));
        assert_eq!(
            config.client_identity,
            Some((dir.path().join(TLS_CERT), dir.path().join(TLS_KEY)))
        );
    }

    /// A bundle without `endpoints.json` is a configuration error naming the file.
    #[test]
    fn missing_endpoints_is_a_clear_error() {
        let dir = bundle(&[(TOKEN, "secret")]);
        let error = ClientConfig::from_credentials_dir(dir.path()).unwrap_err();
        assert!(error.to_string().contains(ENDPOINTS), "{error}");
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
