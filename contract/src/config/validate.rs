//! Reading a configuration file and refusing one that cannot work or is unsafe.

use std::path::{Path, PathBuf};

use super::{Config, MIN_HEADER_BYTES, TrainingMode};

/// A configuration that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid coordinator configuration: {source}")]
    Parse {
        path: PathBuf,
        source: serde_norway::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a YAML file (call [`Config::validate`] once command-line overrides are applied).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config =
            serde_norway::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(config)
    }

    /// Checks what the types cannot express, and the security rules: authentication must be
    /// configured or explicitly disabled, and a listener outside loopback needs TLS or
    /// `insecure`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.training;
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.auth.token_dir.is_none() && !self.auth.disabled {
            return invalid(
                "authentication is required: set auth.token_dir (--token-dir) to the directory \
                 holding the bearer token, or auth.disabled: true (--disable-auth) to run \
                 without",
            );
        }
        let auth = &self.auth;
        if auth.disabled && (auth.admin_token_dir.is_some() || auth.clients_file.is_some()) {
            return invalid(
                "auth.disabled contradicts auth.admin_token_dir and auth.clients_file: without \
                 authentication every caller is an admin already",
            );
        }
        if auth.admin_token_dir.is_some() && auth.admin_token_dir == auth.token_dir {
            return invalid(
                "auth.admin_token_dir must differ from auth.token_dir: every worker would be an \
                 admin",
            );
        }
        if !self.listen.ip().is_loopback() && self.tls.is_none() && !self.insecure {
            return Err(ConfigError::Invalid(format!(
                "listen {} is not a loopback address and TLS is not configured: requests, bearer \
                 tokens included, would cross the network in clear; configure tls, bind to \
                 loopback or pass --insecure (insecure: true)",
                self.listen
            )));
        }
        if let Some(bulk) = &self.bulk {
            if bulk.auth && !bulk.tls {
                return invalid(
                    "bulk.auth needs bulk.tls: the bearer token would cross the network in clear",
                );
            }
            if bulk.tls && self.tls.is_none() {
                return invalid("bulk.tls uses the control plane's tls settings; configure tls");
            }
            if !bulk.tls && !bulk.listen.ip().is_loopback() && !bulk.insecure {
                return Err(ConfigError::Invalid(format!(
                    "bulk.listen {} is not a loopback address and bulk.tls is off: pseudo-gradients \
                     and parameters would cross the network in clear, to and from anyone who can \
                     reach the port; set bulk.tls: true, bind to loopback, or acknowledge it with \
                     bulk.insecure: true",
                    bulk.listen
                )));
            }
            if bulk.listen.port() != 0 && bulk.listen.port() == self.listen.port() {
                return invalid("bulk.listen must use another port than listen");
            }
        }
        if let Some(metrics) = &self.metrics {
            let port = metrics.listen.port();
            let bulk_port = self.bulk.as_ref().map(|b| b.listen.port());
            if port != 0 && (port == self.listen.port() || Some(port) == bulk_port) {
                return invalid("metrics.listen must use another port than listen and bulk.listen");
            }
        }
        if t.mode == TrainingMode::Async {
            return invalid("training.mode async is not implemented yet; use sync");
        }
        if t.min_workers == 0 {
            return invalid("training.min_workers must be at least 1");
        }
        if t.sync_timeout_seconds == 0 || t.heartbeat_timeout_seconds == 0 {
            return invalid(
                "training.sync_timeout_seconds and heartbeat_timeout_seconds must be positive",
            );
        }
        if t.sync_every == 0 {
            return invalid("training.sync_every must be at least 1");
        }
        let o = &t.outer_optimizer;
        if !o.lr.is_finite() || o.lr < 0.0 || !(0.0..=1.0).contains(&o.momentum) {
            return invalid("training.outer_optimizer needs lr >= 0 and 0 <= momentum <= 1");
        }
        if self.limits.staged_uploads == 0 || self.limits.max_workers == 0 {
            return invalid("limits.staged_uploads and limits.max_workers must be at least 1");
        }
        if self.limits.max_header_bytes < MIN_HEADER_BYTES || self.limits.max_headers == 0 {
            return invalid(&format!(
                "limits.max_header_bytes must be at least {MIN_HEADER_BYTES} and \
                 limits.max_headers at least 1"
            ));
        }
        if self.limits.request_timeout_seconds == 0 {
            return invalid("limits.request_timeout_seconds must be at least 1");
        }
        if self.checkpoint.keep == 0 {
            return invalid("checkpoint.keep must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OuterOptimizer;

    #[test]
    fn an_empty_file_means_the_documented_defaults() {
        let config: Config = serde_norway::from_str("{}").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(
            config.training.outer_optimizer,
            OuterOptimizer {
                lr: 0.7,
                momentum: 0.9,
                nesterov: true
            }
        );
        assert_eq!(config.limits.staged_uploads, 2);
    }

    #[test]
    fn auth_must_be_configured_or_disabled_and_non_loopback_needs_insecure() {
        let refused = |yaml: &str| {
            let config: Config = serde_norway::from_str(yaml).unwrap();
            config.validate().err().map(|e| e.to_string())
        };
        assert!(
            refused("{}")
                .unwrap()
                .contains("authentication is required")
        );
        assert_eq!(refused("auth: {token_dir: /run/token}"), None);
        assert_eq!(refused("auth: {disabled: true}"), None);
        let open = "auth: {disabled: true}\nlisten: 0.0.0.0:8512";
        assert!(refused(open).unwrap().contains("not a loopback address"));
        assert_eq!(refused(&format!("{open}\ninsecure: true")), None);
        assert_eq!(
            refused(&format!("{open}\ntls: {{cert: c.pem, key: k.pem}}")),
            None
        );
        let base = "auth: {disabled: true}\n";
        assert!(
            refused(&format!(
                "{base}bulk: {{listen: '127.0.0.1:0', auth: true}}"
            ))
            .unwrap()
            .contains("bulk.auth needs bulk.tls")
        );
        assert!(
            refused(&format!("{base}bulk: {{listen: '127.0.0.1:0', tls: true}}"))
                .unwrap()
                .contains("configure tls")
        );
        assert_eq!(
            refused(&format!("{base}bulk: {{listen: '127.0.0.1:0'}}")),
            None
        );
        assert_eq!(
            refused("auth: {disabled: true}\nlisten: '[::1]:8512'"),
            None,
            "IPv6 loopback is loopback"
        );
    }

    #[test]
    fn typos_are_errors() {
        let error = serde_norway::from_str::<Config>("training: {min_worker: 2}").unwrap_err();
        assert!(
            error.to_string().contains("unknown field `min_worker`"),
            "{error}"
        );
    }

    #[test]
    fn impossible_settings_are_refused() {
        let mut config = Config::default();
        config.auth.disabled = true;
        assert!(config.validate().is_ok());
        config.training.min_workers = 0;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("min_workers")
        );
        let config: Config =
            serde_norway::from_str("training: {mode: async}\nauth: {disabled: true}").unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("not implemented")
        );
        let config: Config =
            serde_norway::from_str("limits: {max_header_bytes: 4096}\nauth: {disabled: true}")
                .unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("max_header_bytes must be at least 8192")
        );
    }

    #[test]
    fn a_cleartext_bulk_plane_beyond_loopback_needs_bulk_insecure() {
        let refused = |yaml: &str| {
            let config: Config = serde_norway::from_str(yaml).unwrap();
            config.validate().err().map(|e| e.to_string())
        };
        let base = "auth: {token_dir: t}\ntls: {cert: c.pem, key: k.pem}\nlisten: 0.0.0.0:8512\n";
        let error = refused(&format!("{base}bulk: {{listen: '0.0.0.0:8513'}}")).unwrap();
        assert!(
            error.contains("bulk.listen 0.0.0.0:8513 is not a loopback address"),
            "{error}"
        );
        assert!(error.contains("bulk.insecure: true"), "{error}");
        // The control plane's `insecure` does not stand in for the bulk plane's.
        assert!(
            refused(&format!(
                "{base}insecure: true\nbulk: {{listen: '[::]:8513'}}"
            ))
            .is_some()
        );
        for accepted in [
            "bulk: {listen: '0.0.0.0:8513', insecure: true}",
            "bulk: {listen: '0.0.0.0:8513', tls: true, auth: true}",
            "bulk: {listen: '127.0.0.1:0'}",
            "bulk: {listen: '[::1]:0'}",
        ] {
            assert_eq!(refused(&format!("{base}{accepted}")), None, "{accepted}");
        }
    }

    #[test]
    fn admin_tokens_and_clients_need_authentication_and_a_token_dir_of_their_own() {
        let refused = |yaml: &str| {
            let config: Config = serde_norway::from_str(yaml).unwrap();
            config.validate().err().map(|e| e.to_string())
        };
        assert_eq!(
            refused(
                "auth: {token_dir: t, admin_token_dir: a, clients_file: /etc/diloco/clients.json}"
            ),
            None
        );
        assert!(
            refused("auth: {disabled: true, admin_token_dir: a}")
                .unwrap()
                .contains("auth.disabled contradicts")
        );
        assert!(
            refused("auth: {disabled: true, clients_file: c.json}")
                .unwrap()
                .contains("auth.disabled contradicts")
        );
        assert!(
            refused("auth: {token_dir: t, admin_token_dir: t}")
                .unwrap()
                .contains("must differ")
        );
    }
}
