//! `training:`: how rounds are formed and how the outer optimizer steps.

use serde::{Deserialize, Serialize};

use crate::wire::dtype::WireDtype;
use crate::wire::frame::PayloadFormat;

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
    /// Codec of tensor responses, announced in `/info` as `wire_format` (forgather's
    /// workers adopt it); a request may name another with the `wire_format` query parameter.
    /// Uploads are decoded by their frame's `fmt` whatever this says.
    pub wire_format: PayloadFormat,
    /// Tokens (the run's `total_tokens`) after which every registered worker is told
    /// `save_and_stop`, once (forgather's `--token-budget`); 0: no budget.
    /// `/control/update_token_budget` changes it while running.
    #[serde(skip_serializing_if = "is_zero")]
    pub token_budget: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
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
            token_budget: 0,
            wire_format: PayloadFormat::Safetensors,
        }
    }
}

/// Outer SGD settings: SGD with (Nesterov) momentum applied to the averaged pseudo-gradient.
/// The coordinator's checkpoints record them too (`/control/update_optimizer` changes them).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OuterOptimizer {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0 disables momentum).
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl Default for OuterOptimizer {
    fn default() -> Self {
        Self {
            lr: 0.7,
            momentum: 0.9,
            nesterov: true,
        }
    }
}

impl OuterOptimizer {
    /// torch's one-line description, as `/status` reports it (`outer_optimizer`).
    pub fn describe(&self) -> String {
        format!(
            "SGD(lr={}, momentum={}, dampening=0, weight_decay=0, nesterov={})",
            self.lr,
            self.momentum,
            if self.nesterov { "True" } else { "False" }
        )
    }
}
