//! What the coordinator tells about itself: `/status` (the operator polls it for
//! `status.coordinator`), `/info` (what workers must adopt) and `/known_workers`. forgather's
//! field names, plus ours; fields forgather has and we do not implement carry fixed values.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::TrainingMode;
use crate::wire::dtype::WireDtype;

/// `/status`'s `status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerState {
    /// Serving.
    #[default]
    Running,
}

/// `/status` reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusReply {
    /// Always `running`.
    pub status: ServerState,
    /// The round schedule.
    pub mode: TrainingMode,
    /// Outer steps completed.
    pub sync_round: u64,
    /// forgather's (mutable, informational) worker count.
    pub num_workers: usize,
    /// Workers registered now.
    pub num_registered: usize,
    /// The registered workers, by id.
    pub workers: BTreeMap<String, WorkerStatus>,
    /// Workers whose pseudo-gradient of this round was folded.
    pub pending_submissions: Vec<String>,
    /// Participants of this round that have not contributed yet.
    pub waiting_for: Vec<String>,
    /// Workers with an upload arriving now.
    pub receiving: Vec<String>,
    /// When the coordinator started (RFC 3339).
    pub started_at: String,
    /// Seconds since then.
    pub uptime_seconds: f64,
    /// `training.heartbeat_timeout_seconds`.
    pub heartbeat_timeout: u64,
    /// `training.sync_timeout_seconds`.
    pub sync_timeout: u64,
    /// `training.min_workers`.
    pub min_workers: usize,
    /// Outer learning rate now.
    pub outer_lr: f64,
    /// Outer momentum now.
    pub outer_momentum: f64,
    /// torch's description of the outer optimizer.
    pub outer_optimizer: String,
    /// `checkpoint.dir`.
    pub save_dir: Option<PathBuf>,
    /// Round of the newest checkpoint.
    pub last_checkpoint_round: Option<u64>,
    /// The model's parameters exist.
    pub parameters_initialized: bool,
    /// Elements in the model.
    pub model_params: usize,
    /// Its size in fp32, MiB.
    pub model_size_mb: f64,
    /// Seconds the last outer step took.
    pub last_outer_step_seconds: Option<f64>,
    /// Seconds the last round's parameters took to encode.
    pub last_publish_seconds: Option<f64>,
    /// The device the outer optimizer runs on, and what libtorch found.
    pub device: String,
    /// Statistics over the workers' latest reports.
    pub aggregate_stats: AggregateStats,
    /// Progress towards the token budget (present when there is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_progress: Option<TokenProgress>,
    /// Workers that left, were evicted or kicked (present once there is one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_worker_deaths: Option<u64>,
}

/// A registered worker in [`StatusReply::workers`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    /// Hostname it reported.
    pub hostname: Option<String>,
    /// When it registered (RFC 3339).
    pub registered_at: String,
    /// When it last sent a heartbeat (RFC 3339).
    pub last_heartbeat: String,
    /// The coordinator's round.
    pub sync_round: u64,
    /// Round of its last folded upload.
    pub last_sync_server_round: Option<u64>,
    /// Inner steps per second it reported.
    pub steps_per_second: Option<f64>,
    /// Its output directory, as reported.
    pub output_dir: Option<String>,
    /// Its latest whitelisted statistics.
    pub stats: BTreeMap<String, f64>,
    /// Its latest synchronisation bookkeeping (whitelisted like `stats`).
    #[serde(default)]
    pub sync_state: BTreeMap<String, f64>,
    /// Restored from a checkpoint and not heard from since the restart.
    pub restored: bool,
}

/// [`StatusReply::aggregate_stats`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AggregateStats {
    /// Tokens trained over the run, by every worker that reported (departed ones included).
    pub total_tokens: f64,
    /// FLOPs likewise.
    #[serde(default)]
    pub total_flos: f64,
    /// Inner steps likewise.
    pub total_steps: f64,
    /// Sum of the live workers' `tok_per_sec`.
    pub tok_per_sec: f64,
    /// The live workers' `mfu`, weighted by their `tokens_window`.
    #[serde(default)]
    pub mfu: Option<f64>,
    /// Sum of the live workers' `peak_mem`.
    #[serde(default)]
    pub peak_memory: Option<f64>,
    /// The live workers' `grad_norm`, weighted by their `tokens_window`.
    #[serde(default)]
    pub grad_norm: Option<f64>,
    /// `loss` as a token-weighted exponential moving average over reports (decay 0.7).
    pub train_loss: Option<f64>,
    /// `eval_loss` likewise (decay 0.5).
    pub eval_loss: Option<f64>,
    /// The newest `eval_step` a live worker reported.
    #[serde(default)]
    pub eval_step: Option<f64>,
    /// Workers that reported statistics.
    pub num_reporting: usize,
}

/// [`StatusReply::token_progress`]: forgather's progress gauge (#224).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenProgress {
    /// The run's `total_tokens`.
    pub tokens_completed: f64,
    /// The budget.
    pub token_budget: u64,
    /// `tokens_completed / token_budget`, at most 1.
    pub fraction: f64,
    /// Seconds the rate is measured over.
    pub rate_window_seconds: f64,
    /// Tokens per second over that window, not counting a worker's first report (its
    /// catch-up); null before any other increase, 0 when training stalled.
    pub tokens_per_second: Option<f64>,
    /// Seconds to the budget at that rate; null when the rate is null or 0.
    pub eta_seconds: Option<f64>,
    /// `save_and_stop` was sent because the budget was reached.
    pub budget_stop_sent: bool,
}

/// `/info` reply. Workers need only [`InfoReply::expected_client_settings`] and whether the
/// model is initialized; every other field has a default so that a leaner server still parses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InfoReply {
    /// `checkpoint.dir`.
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
    /// `checkpoint.dir` (forgather has both).
    #[serde(default)]
    pub model_checkpoint_dir: Option<PathBuf>,
    /// The outer optimizer, in torch's terms.
    #[serde(default)]
    pub outer_optimizer: InfoOuterOptimizer,
    /// The round schedule.
    #[serde(default)]
    pub mode: TrainingMode,
    /// Always false (async mode is not implemented).
    #[serde(default)]
    pub async_mode: bool,
    /// forgather's (mutable, informational) worker count.
    #[serde(default)]
    pub num_workers: usize,
    /// Elements in the model.
    #[serde(default)]
    pub num_parameters: usize,
    /// Its size in fp32, MiB.
    #[serde(default)]
    pub model_size_mb: f64,
    /// Hash of the model's names and shapes.
    #[serde(default)]
    pub model_hash: Option<String>,
    /// The coordinator has parameters (else one worker must send them to `/init_params`).
    #[serde(default = "initialized_unless_said")]
    pub parameters_initialized: bool,
    /// Outer steps completed.
    #[serde(default)]
    pub sync_round: u64,
    /// Always null: no shared-memory backend (forgather's `shm_group_dir`).
    #[serde(default)]
    pub shm_group_dir: Option<String>,
    /// Always null: no shared-memory backend (forgather's `shm_group_size`).
    #[serde(default)]
    pub shm_group_size: Option<u64>,
    /// Always false (dynamic local updates are not implemented).
    #[serde(default)]
    pub dylu_enabled: bool,
    /// Always null: the base H of dynamic local updates, which are not implemented.
    #[serde(default)]
    pub dylu_base_sync_every: Option<u64>,
    /// Always 0 (no async grace window).
    #[serde(default)]
    pub grace_period: f64,
    /// Always `server`: workers adopt [`InfoReply::expected_client_settings`].
    #[serde(default)]
    pub settings_authority: String,
    /// The settings workers must adopt.
    pub expected_client_settings: ExpectedClientSettings,
    /// Always `http`.
    #[serde(default)]
    pub transport: String,
    /// Always null (no gRPC transport).
    #[serde(default)]
    pub grpc_endpoint: Option<String>,
}

/// forgather's servers that predate the field always had parameters.
fn initialized_unless_said() -> bool {
    true
}

/// [`InfoReply::outer_optimizer`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InfoOuterOptimizer {
    /// Always `SGD`.
    pub name: String,
    /// Learning rate now.
    pub lr: f64,
    /// Momentum now.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Always 0.
    pub dampening: f64,
    /// Always 0.
    pub weight_decay: f64,
}

/// `expected_client_settings` of `/info`: what a worker must adopt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpectedClientSettings {
    /// Inner steps per round (H).
    pub sync_every: u64,
    /// Always false.
    #[serde(default)]
    pub dylu: bool,
    /// Always false.
    #[serde(default)]
    pub verbose_sync: bool,
    /// Dtype of pseudo-gradient uploads.
    pub upload_dtype: WireDtype,
    /// Always false (no stochastic rounding).
    #[serde(default)]
    pub upload_sr: bool,
    /// Dtype of parameters sent back.
    pub download_dtype: WireDtype,
    /// Always false.
    #[serde(default)]
    pub download_sr: bool,
    /// Codec of tensor responses that name none: `safetensors` ([`crate::api::WIRE_FORMAT`],
    /// the default) or `pickle` (`training.wire_format`).
    pub wire_format: String,
    /// Always `http`.
    #[serde(default)]
    pub backend: String,
    /// Uploads are bf16.
    #[serde(default)]
    pub bf16_comm: bool,
    /// Always 1 (fragments are not implemented).
    #[serde(default)]
    pub num_fragments_min: u32,
    /// Always 1.
    #[serde(default)]
    pub num_fragments_default: u32,
    /// Always `strided`.
    #[serde(default)]
    pub fragment_assignment_default: String,
    /// Seconds without a heartbeat before eviction.
    pub heartbeat_timeout: u64,
}

/// `/known_workers` reply: running workers first, then the most recently registered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownWorkersReply {
    /// Every worker seen (bounded).
    pub workers: Vec<KnownWorker>,
}

/// An entry of [`KnownWorkersReply::workers`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownWorker {
    /// The worker.
    pub worker_id: String,
    /// Its output directory.
    pub output_dir: Option<String>,
    /// When it last registered (RFC 3339).
    pub last_registered: String,
    /// Registered right now.
    pub running: bool,
}
