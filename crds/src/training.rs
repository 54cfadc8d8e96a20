//! `spec.training`: how rounds are formed and how the outer optimizer steps.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How rounds are formed and how the outer optimizer steps.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("!has(self.expectedWorkers) || self.expectedWorkers >= self.minWorkers")
    .message("expectedWorkers must be at least minWorkers"))]
#[serde(rename_all = "camelCase")]
pub struct TrainingSpec {
    /// `sync`: a round closes when every live worker has submitted. `async`: every submission
    /// is applied as it arrives (not implemented yet: the operator reports it in the
    /// `Ready` condition). Immutable: a running run cannot change its schedule.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("training.mode is immutable: create a new DiLoCoServer for another schedule"))]
    pub mode: TrainingMode,

    /// The outer optimizer: SGD with Nesterov momentum, as in the DiLoCo paper.
    #[serde(default)]
    pub outer_optimizer: OuterOptimizer,

    /// Contributions every round needs before it closes, also after `syncTimeoutSeconds`;
    /// until a round has them, workers that register join it. Set it to the number of workers
    /// that must be in every round (a worker that registers after a round's first
    /// contribution otherwise joins the next one).
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

    /// Codec of the parameters the coordinator sends, announced to workers in `/info`:
    /// `safetensors` (default) or `pickle` (`torch.save`, what forgather workers expect by
    /// default). Uploads are accepted in either; a pickle is never unpickled, only read by a
    /// restricted reader. Workers may ask for the other codec per request.
    #[serde(default)]
    pub wire_format: WireFormat,

    /// Fragments the model is synchronised in (streaming DiLoCo). Only 1 (the whole model
    /// every round) is implemented. Immutable.
    #[serde(default = "default_num_fragments")]
    #[schemars(range(min = 1, max = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("training.numFragments is immutable"))]
    pub num_fragments: i32,

    /// Save a checkpoint (parameters, momentum, round, roster) to the audit volume every this
    /// many rounds; 0 saves only on shutdown. The coordinator resumes from it after a restart.
    #[serde(default = "default_checkpoint_every_rounds")]
    #[schemars(range(min = 0))]
    pub checkpoint_every_rounds: i32,

    /// Tokens (the run's `total_tokens`, from workers' reported `tokens_total`) after which
    /// every registered worker is told `save_and_stop`, once. Unset or 0: no budget. A change
    /// restarts the coordinator from its checkpoint with the new budget;
    /// `/control/update_token_budget` changes it without a restart until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub token_budget: Option<i64>,
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
            wire_format: WireFormat::default(),
            num_fragments: default_num_fragments(),
            checkpoint_every_rounds: default_checkpoint_every_rounds(),
            token_budget: None,
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
fn default_num_fragments() -> i32 {
    1
}
fn default_checkpoint_every_rounds() -> i32 {
    10
}

/// `sync` or `async` rounds.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TrainingMode {
    #[default]
    Sync,
    Async,
}

/// Tensor serialization on the wire.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    /// safetensors: dense tensors, no code.
    #[default]
    Safetensors,
    /// `torch.save` (a zip archive holding a pickle), forgather's default.
    Pickle,
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
    #[serde(default = "crate::default_true")]
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
