//! The coordinator's configuration: one YAML file (the operator renders it into a ConfigMap),
//! with a few command-line / environment overrides. Every option is documented in
//! `docs/coordinator.md`. Unknown keys are errors, so a typo never silently does nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::device::DeviceChoice;
use crate::outer_optimizer::OuterOptimizer;
use crate::wire::dtype::WireDtype;

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the control plane listener.
    pub listen: SocketAddr,
    /// Where the outer optimizer runs.
    pub device: DeviceChoice,
    /// Where the initial parameters come from.
    pub model: ModelConfig,
    /// Rounds, barrier and optimizer.
    pub training: TrainingConfig,
    /// Periodic checkpoints.
    pub checkpoint: CheckpointConfig,
    /// Bounds on what clients may send.
    pub limits: Limits,
    /// Who may call the coordinator.
    pub auth: AuthConfig,
    /// The audit log.
    pub audit: AuditConfig,
    /// TLS on the listener (PEM files, reloaded when they change).
    pub tls: Option<TlsConfig>,
    /// A second listener for the tensor paths only (the bulk plane).
    pub bulk: Option<BulkConfig>,
    /// A cleartext, unauthenticated listener for `/metrics` and `/health` only (Prometheus
    /// scrapes and probes); without it `/metrics` is served, authenticated, on `listen`.
    pub metrics: Option<MetricsConfig>,
    /// Allow a non-loopback listener without TLS (traffic, bearer tokens included, in clear).
    pub insecure: bool,
}

/// The bulk plane: `/submit_pseudograd`, `/submit_fragment_pseudograd` and `/global_params`
/// (plus `/health`) on a listener of their own, e.g. cleartext on a private network while the
/// control plane stays behind TLS and tokens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkConfig {
    /// Address of the bulk listener (port 0: picked at start, advertised to workers).
    pub listen: SocketAddr,
    /// Serve it with the control plane's TLS settings.
    #[serde(default)]
    pub tls: bool,
    /// Require the same credentials as the control plane (needs `tls`).
    #[serde(default)]
    pub auth: bool,
    /// URL advertised to workers (`/register`, `X-Forgather-Bulk-Url`); default: the bound
    /// address, or for a wildcard bind the host the worker used for the control plane.
    #[serde(default)]
    pub advertise_url: Option<String>,
    /// Allow a cleartext bulk listener on a non-loopback address (tensors in clear, and no
    /// authentication: anyone who can reach it can submit for a worker it names).
    #[serde(default)]
    pub insecure: bool,
}

/// The metrics listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the metrics listener.
    pub listen: SocketAddr,
}

/// TLS files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// CA whose client certificates authenticate without a bearer token (PEM); optional.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// Authentication.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Directory with the worker bearer token files `token`, `previous-token` and
    /// `previous-valid-until` (the mounted Secret); re-read every second. Its holders have the
    /// worker role: everything but control actions.
    pub token_dir: Option<PathBuf>,
    /// Directory with the admin bearer token files (same layout and reloading); its holders
    /// may also run control actions. Without it only an admin client certificate can.
    pub admin_token_dir: Option<PathBuf>,
    /// JSON list of the client certificates allowed, by subject common name, with their
    /// role; re-read every second. Without it every certificate `tls.client_ca` signed is a
    /// worker.
    pub clients_file: Option<PathBuf>,
    /// Run without authentication (every caller is an admin). Required to be said
    /// explicitly: without `token_dir` and without this the coordinator refuses to start.
    pub disabled: bool,
}

/// The audit log.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// JSONL file records are appended to (its directory is created); none: no audit log.
    pub path: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8512)),
            device: DeviceChoice::Auto,
            model: ModelConfig::default(),
            training: TrainingConfig::default(),
            checkpoint: CheckpointConfig::default(),
            limits: Limits::default(),
            auth: AuthConfig::default(),
            audit: AuditConfig::default(),
            tls: None,
            bulk: None,
            metrics: None,
            insecure: false,
        }
    }
}

/// Where the initial parameters come from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A safetensors file with the initial parameters. Without it (and without a checkpoint)
    /// the first worker to POST `/init_params` defines them.
    pub initial_parameters: Option<PathBuf>,
}

/// `sync` is implemented; `async` is reserved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainingMode {
    /// A round closes when every live participant has contributed.
    #[default]
    Sync,
    /// Every submission applied as it arrives (not implemented yet).
    Async,
}

/// Rounds, barrier and optimizer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    /// `sync` (only mode implemented).
    pub mode: TrainingMode,
    /// The outer SGD.
    pub outer_optimizer: OuterOptimizer,
    /// A round never closes with fewer contributions than this.
    pub min_workers: usize,
    /// Seconds after a round's first contribution when it closes without the missing workers.
    pub sync_timeout_seconds: u64,
    /// Seconds without a heartbeat (or any request) after which a worker is evicted.
    pub heartbeat_timeout_seconds: u64,
    /// Inner steps per round (H), announced to workers in `/info`.
    pub sync_every: u64,
    /// Dtype workers must upload pseudo-gradients in.
    pub upload_dtype: WireDtype,
    /// Dtype parameters are sent in.
    pub download_dtype: WireDtype,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        Self {
            mode: TrainingMode::Sync,
            outer_optimizer: OuterOptimizer::default(),
            min_workers: 1,
            sync_timeout_seconds: 600,
            heartbeat_timeout_seconds: 120,
            sync_every: 500,
            upload_dtype: WireDtype::Bf16,
            download_dtype: WireDtype::Fp32,
        }
    }
}

/// Periodic checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Directory for checkpoints; none means no checkpoints (and no resume).
    pub dir: Option<PathBuf>,
    /// Save every this many rounds (0: only on shutdown and on request).
    pub every_rounds: u64,
    /// Checkpoints kept (older ones are deleted); at least 1.
    pub keep: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            dir: None,
            every_rounds: 10,
            keep: 3,
        }
    }
}

/// Bounds on what clients may send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest upload body in bytes (frame header + safetensors).
    pub max_upload_bytes: u64,
    /// Largest JSON request body in bytes.
    pub max_json_bytes: usize,
    /// Most workers registered at once.
    pub max_workers: usize,
    /// Uploads received and validated at the same time; the rest wait. Bounds memory at
    /// about `staged_uploads` uploads whatever the number of workers.
    pub staged_uploads: usize,
    /// Failed authentications allowed from one IP address per `auth_failure_window_seconds`;
    /// beyond that its unauthenticated requests get 429 until the window ends.
    pub auth_failures_per_window: u32,
    /// Length of that window.
    pub auth_failure_window_seconds: u64,
    /// Largest request head (request line and headers) in bytes; larger ones get 431. It is
    /// also the most a connection reads from its socket at once.
    pub max_header_bytes: usize,
    /// Most header fields in one request; more get 431.
    pub max_headers: usize,
    /// Longest a JSON request (reading its body included) may take before it gets 408. Tensor
    /// transfers are bounded by `training.heartbeat_timeout_seconds` between bytes instead.
    pub request_timeout_seconds: u64,
}

/// The smallest `limits.max_header_bytes` (hyper's smallest connection buffer).
pub const MIN_HEADER_BYTES: usize = 8192;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_upload_bytes: 64 << 30,
            max_json_bytes: 1 << 20,
            max_workers: 1024,
            staged_uploads: 2,
            auth_failures_per_window: 20,
            auth_failure_window_seconds: 60,
            max_header_bytes: 256 << 10,
            max_headers: 100,
            request_timeout_seconds: 30,
        }
    }
}

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
