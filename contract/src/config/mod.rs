//! The coordinator's configuration: one YAML file (the operator renders it into a ConfigMap
//! from these types), with a few command-line / environment overrides. Every option is
//! documented in `docs/coordinator.md`. Unknown keys are errors, so a typo never silently does
//! nothing.

mod training;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use training::{OuterOptimizer, TrainingConfig, TrainingMode};
pub use validate::ConfigError;

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the control plane listener.
    pub listen: SocketAddr,
    /// Where the outer optimizer runs.
    pub device: Device,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// A second listener for the tensor paths only (the bulk plane).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bulk: Option<BulkConfig>,
    /// A cleartext, unauthenticated listener for `/metrics` and `/health` only (Prometheus
    /// scrapes and probes); without it `/metrics` is served, authenticated, on `listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
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
    #[serde(skip_serializing_if = "Option::is_none")]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
}

/// Authentication.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Directory with the worker bearer token files `token`, `previous-token` and
    /// `previous-valid-until` (the mounted Secret); re-read every second. Its holders have the
    /// worker role: everything but control actions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_dir: Option<PathBuf>,
    /// Directory with the admin bearer token files (same layout and reloading); its holders
    /// may also run control actions. Without it only an admin client certificate can.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_dir: Option<PathBuf>,
    /// JSON list of the client certificates allowed, by subject common name, with their
    /// role; re-read every second. Without it every certificate `tls.client_ca` signed is a
    /// worker.
    #[serde(skip_serializing_if = "Option::is_none")]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8512)),
            device: Device::Auto,
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

/// Where the outer optimizer runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA when a GPU is visible, else CPU.
    #[default]
    Auto,
    /// Always the CPU.
    Cpu,
    /// CUDA device 0; start-up fails without a GPU.
    Cuda,
}

impl Device {
    /// Every choice, by its name in the configuration.
    pub const ALL: [Device; 3] = [Device::Auto, Device::Cpu, Device::Cuda];

    /// The name in the configuration (`auto`, `cpu`, `cuda`).
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Device::ALL
            .into_iter()
            .find(|d| d.as_str() == name)
            .ok_or_else(|| format!("unknown device {name:?}; one of auto, cpu, cuda"))
    }
}

/// Where the initial parameters come from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// The initial parameters: a safetensors file, or a directory of a sharded checkpoint
    /// (Hugging Face layout: `model.safetensors.index.json` mapping each tensor to its shard
    /// file in the same directory, or a lone `model.safetensors`). Without it (and without a
    /// checkpoint) the first worker to POST `/init_params` defines them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_parameters: Option<PathBuf>,
    /// The model definition directory (configuration, Python sources, tokenizer files; never
    /// weights), served as a deterministic tar at `/model_def` and folded into
    /// `/info.model_hash`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition_dir: Option<PathBuf>,
}

/// Periodic checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Directory for checkpoints; none means no checkpoints (and no resume).
    #[serde(skip_serializing_if = "Option::is_none")]
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
