//! `spec` of a `DiLoCoServer`: what the user declares. Field docs are what `kubectl explain`
//! shows, so they are written for users.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::status::DiLoCoServerStatus;

/// The port of the control plane (registration, heartbeats, status, control actions).
pub const DEFAULT_CONTROL_PORT: i32 = 8512;
/// The port of the bulk plane (pseudo-gradient uploads and parameter downloads).
pub const DEFAULT_BULK_PORT: i32 = 8513;

// Integers are i32/i64 as in Kubernetes' own APIs: the API server knows only those formats.

/// A DiLoCo coordinator: the outer optimizer that workers on any cluster register with,
/// upload pseudo-gradients to and receive averaged parameters from. The operator turns it into
/// credentials, certificates, Services, NetworkPolicies and the coordinator Deployment.
// Every printcolumn repeats `type_ = "string"`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "diloco.dev",
    version = "v1alpha1",
    kind = "DiLoCoServer",
    namespaced,
    shortname = "dls",
    category = "diloco",
    doc = "A DiLoCo training coordinator, reconciled by diloco-operator into credentials, certificates, Services, NetworkPolicies and the coordinator Deployment.",
    status = "DiLoCoServerStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Round",
        type_ = "integer",
        json_path = ".status.coordinator.round"
    ),
    printcolumn(
        name = "Workers",
        type_ = "integer",
        json_path = ".status.coordinator.workers"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".status.endpoints.control"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = 1,
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#
    )
)]
#[x_kube(validation = Rule::new("!self.bulk.enabled || self.bulk.port != self.control.port")
    .message("bulk.port must differ from control.port"))]
#[serde(rename_all = "camelCase")]
pub struct DiLoCoServerSpec {
    /// Container image of the coordinator, for example
    /// `ghcr.io/diloco-dev/diloco-coordinator:0.1.0`.
    #[schemars(length(min = 1))]
    pub image: String,

    /// Where the outer optimizer runs: `auto` (CUDA when the pod has a GPU, else CPU), `cpu`
    /// or `cuda` (start-up fails without a GPU).
    #[serde(default)]
    pub device: Device,

    /// How rounds are formed and how the outer optimizer steps.
    #[serde(default)]
    pub training: TrainingSpec,

    /// The control plane: registration, heartbeats, status and control actions (HTTPS).
    #[serde(default)]
    pub control: ControlSpec,

    /// The bulk plane that carries tensors, on its own port and Service.
    #[serde(default)]
    pub bulk: BulkSpec,

    /// Stop reconciling the server's children (for maintenance). The running coordinator is
    /// left as it is.
    #[serde(default)]
    pub paused: bool,
}

/// Where the outer optimizer runs.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    #[default]
    Auto,
    Cpu,
    Cuda,
}

/// How rounds are formed and how the outer optimizer steps.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.expectedWorkers) || self.expectedWorkers >= self.minWorkers")
    .message("expectedWorkers must be at least minWorkers"))]
#[serde(rename_all = "camelCase")]
pub struct TrainingSpec {
    /// `sync`: a round closes when every live worker has submitted. `async`: every submission
    /// is applied as it arrives.
    #[serde(default)]
    pub mode: TrainingMode,

    /// The outer optimizer: SGD with Nesterov momentum, as in the DiLoCo paper.
    #[serde(default)]
    pub outer_optimizer: OuterOptimizer,

    /// A round that times out still closes if at least this many workers submitted.
    #[serde(default = "default_min_workers")]
    #[schemars(range(min = 1))]
    pub min_workers: i32,

    /// How many workers the run is planned for (informational; the barrier follows the
    /// workers actually registered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub expected_workers: Option<i32>,

    /// Seconds a round waits for missing submissions before closing with the ones it has.
    #[serde(default = "default_sync_timeout_seconds")]
    #[schemars(range(min = 1))]
    pub sync_timeout_seconds: i32,

    /// Seconds without a heartbeat after which a worker is evicted and the barrier releases.
    #[serde(default = "default_heartbeat_timeout_seconds")]
    #[schemars(range(min = 1))]
    pub heartbeat_timeout_seconds: i32,

    /// Inner steps per round (H), announced to workers.
    #[serde(default = "default_sync_every")]
    #[schemars(range(min = 1))]
    pub sync_every: i32,

    /// Precision of pseudo-gradients on the wire: `bf16` (half the bytes) or `fp32`.
    #[serde(default = "WireDtype::bf16")]
    pub upload_dtype: WireDtype,

    /// Precision of parameters sent to workers: `fp32` or `bf16`.
    #[serde(default = "WireDtype::fp32")]
    pub download_dtype: WireDtype,
}

impl Default for TrainingSpec {
    fn default() -> Self {
        Self {
            mode: TrainingMode::default(),
            outer_optimizer: OuterOptimizer::default(),
            min_workers: default_min_workers(),
            expected_workers: None,
            sync_timeout_seconds: default_sync_timeout_seconds(),
            heartbeat_timeout_seconds: default_heartbeat_timeout_seconds(),
            sync_every: default_sync_every(),
            upload_dtype: WireDtype::Bf16,
            download_dtype: WireDtype::Fp32,
        }
    }
}

fn default_min_workers() -> i32 {
    1
}
fn default_sync_timeout_seconds() -> i32 {
    600
}
fn default_heartbeat_timeout_seconds() -> i32 {
    120
}
fn default_sync_every() -> i32 {
    500
}

/// `sync` or `async` rounds.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TrainingMode {
    #[default]
    Sync,
    Async,
}

/// Tensor precision on the wire.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WireDtype {
    Bf16,
    Fp32,
}

impl WireDtype {
    fn bf16() -> Self {
        Self::Bf16
    }
    fn fp32() -> Self {
        Self::Fp32
    }
}

/// SGD with (Nesterov) momentum applied to the averaged pseudo-gradient.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OuterOptimizer {
    /// Outer learning rate.
    #[serde(default = "default_outer_lr")]
    #[schemars(range(min = 0.0))]
    pub lr: f64,
    /// Momentum factor.
    #[serde(default = "default_outer_momentum")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub momentum: f64,
    /// Use Nesterov momentum.
    #[serde(default = "default_true")]
    pub nesterov: bool,
}

impl Default for OuterOptimizer {
    fn default() -> Self {
        Self {
            lr: default_outer_lr(),
            momentum: default_outer_momentum(),
            nesterov: true,
        }
    }
}

fn default_outer_lr() -> f64 {
    0.7
}
fn default_outer_momentum() -> f64 {
    0.9
}
fn default_true() -> bool {
    true
}

/// The control plane listener.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ControlSpec {
    /// Port of the control plane (container port and Service port).
    #[serde(default = "default_control_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for ControlSpec {
    fn default() -> Self {
        Self {
            port: DEFAULT_CONTROL_PORT,
        }
    }
}

fn default_control_port() -> i32 {
    DEFAULT_CONTROL_PORT
}

/// The bulk plane listener that carries tensors.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!self.auth || self.tls")
    .message("bulk.auth requires bulk.tls: a bearer token sent over cleartext would leak the control-plane credential"))]
#[serde(rename_all = "camelCase")]
pub struct BulkSpec {
    /// Serve tensors on a separate port and Service. When false, everything goes through the
    /// control plane.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Port of the bulk plane (container port and Service port).
    #[serde(default = "default_bulk_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Encrypt the bulk plane with the server certificate.
    #[serde(default = "default_true")]
    pub tls: bool,
    /// Require the bearer token (or a client certificate) on the bulk plane. Needs `tls`.
    #[serde(default = "default_true")]
    pub auth: bool,
}

impl Default for BulkSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            port: DEFAULT_BULK_PORT,
            tls: true,
            auth: true,
        }
    }
}

fn default_bulk_port() -> i32 {
    DEFAULT_BULK_PORT
}
