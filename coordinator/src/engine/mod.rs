//! The round engine: registration, heartbeats, eviction, uploads, the sync barrier, the outer
//! step and checkpoints. It knows nothing of HTTP: operations take typed requests and return
//! contract replies or an [`EngineError`]; `http/` turns those into responses.
//!
//! Two locks, always taken in this order when both are needed:
//! - `tensors` (the [`OuterState`]) is held for the slow work — folding an upload, the outer
//!   step, encoding, checkpointing — and only on blocking threads;
//! - `shared` (roster, round, settings) is held only for short bookkeeping, so heartbeats,
//!   registrations and `/status` never wait for tensor work.
//!
//! After a round closes, θ is encoded once into [`Published`] and every waiting worker gets
//! the same bytes.
//!
//! One file per seam: [`registration`] (who is in the run), [`uploads`] (receiving and
//! folding pseudo-gradients), [`closing`] (the barrier, the outer step, waiting for a round),
//! [`checkpoints`] (saving and resuming), [`control`] and [`status`] (admin actions and
//! reports); [`round`] and [`roster`] are the pure bookkeeping they share.

mod checkpoints;
mod closing;
mod control;
mod dispatch;
mod error;
mod loss_average;
mod published;
mod registration;
pub mod roster;
pub mod round;
pub mod run_stats;
mod status;
#[cfg(test)]
mod test_support;
mod token_budget;
mod uploads;
pub mod work_units;

pub use error::EngineError;
pub use published::Published;
pub use registration::Departure;
pub use uploads::UploadTicket;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jiff::Timestamp;
use tokio::sync::watch;

use loss_average::LossAverages;
use roster::Roster;
use round::Round;
use run_stats::RunStats;
use work_units::WorkQueues;

use crate::audit::{AuditLog, AuditRecord};
use crate::checkpoint::Loaded;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::model::ModelLayout;
use crate::model_definition::{ModelDefinition, model_hash};
use crate::outer_optimizer::OuterOptimizer;
use crate::outer_state::OuterState;
use crate::staging::StagingPool;
use crate::upload::StagedUpload;

pub(crate) struct Shared {
    roster: Roster,
    round: Round,
    /// Workers with an upload in flight (at most one each).
    receiving: BTreeSet<String>,
    optimizer: OuterOptimizer,
    /// forgather's mutable `num_workers` (informational in sync mode).
    num_workers: usize,
    layout: Option<Arc<ModelLayout>>,
    /// The outer step of the current round is running.
    closing: bool,
    total_worker_deaths: u64,
    last_outer_step_seconds: Option<f64>,
    /// Seconds the last round's new θ took to encode for download.
    last_publish_seconds: Option<f64>,
    last_checkpoint_round: Option<u64>,
    /// The worker whose upload, the round's first, is being stored into the accumulator as
    /// it arrives. While it streams nothing else is folded (and the round cannot close).
    stream_owner: Option<String>,
    /// Totals over every worker that ever reported, and their history.
    stats: RunStats,
    /// `train_loss` and `eval_loss` (not saved: display only, null until the next report).
    losses: LossAverages,
    /// Tokens after which every worker is told `save_and_stop` (0: none).
    token_budget: u64,
    /// That was done (not saved: a restart over budget tells them again).
    budget_stop_sent: bool,
}

/// The coordinator's state and operations. Cheap to share behind an `Arc`.
pub struct Coordinator {
    config: Config,
    device: tch::Device,
    shared: Mutex<Shared>,
    /// Work-unit queues. Their own lock (taken alone, or after `shared`), as in forgather.
    work: Mutex<WorkQueues>,
    tensors: Mutex<Option<OuterState>>,
    published: watch::Sender<Option<Arc<Published>>>,
    staging: Arc<StagingPool>,
    /// Mirrors `Shared::stream_owner.is_some()` for uploads waiting to fold.
    streaming: watch::Sender<bool>,
    started_at: Timestamp,
    started: Instant,
    metrics: Metrics,
    audit: Arc<AuditLog>,
    /// The id of the next relayed command. It starts at the start time in microseconds, so ids
    /// keep growing across restarts and a worker never takes a new command for one it already
    /// acknowledged.
    next_command_id: AtomicU64,
    shutdown: watch::Sender<bool>,
    /// The bundle served at `/model_def`, if a definition directory is configured.
    definition: Option<Arc<ModelDefinition>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind; keep serving.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Coordinator {
    /// Starts from a checkpoint if `restored`, else from `initial` parameters if given, else
    /// uninitialized (the first `/init_params` defines the model).
    pub fn new(
        config: Config,
        device: tch::Device,
        restored: Option<Loaded>,
        initial: Option<StagedUpload>,
    ) -> Arc<Self> {
        Self::with_definition(config, device, restored, initial, None)
    }

    /// [`Coordinator::new`], serving `definition` at `/model_def`.
    pub fn with_definition(
        config: Config,
        device: tch::Device,
        restored: Option<Loaded>,
        initial: Option<StagedUpload>,
        definition: Option<ModelDefinition>,
    ) -> Arc<Self> {
        let now = Instant::now();
        let metrics = Metrics::new();
        let mut optimizer = config.training.outer_optimizer;
        let mut round = Round::new(0, []);
        let mut roster = Roster::default();
        let mut state = None;
        let mut last_checkpoint_round = None;
        let mut work = WorkQueues::default();
        let mut stats = RunStats::default();
        if let Some(loaded) = restored {
            let resumed = checkpoints::resume(loaded, device, now);
            optimizer = resumed.optimizer;
            roster = resumed.roster;
            round = resumed.round;
            last_checkpoint_round = Some(round.number);
            state = Some(resumed.state);
            work = resumed.work;
            stats = resumed.stats;
        } else if let Some(upload) = initial
            && let Some(layout) = upload.layout.clone().map(Arc::new)
        {
            state = Some(OuterState::from_upload(layout, &upload, device));
        }
        let layout = state.as_ref().map(|s| s.layout().clone());
        let shared = Shared {
            num_workers: config.training.min_workers.max(roster.workers.len()),
            roster,
            round,
            receiving: BTreeSet::new(),
            optimizer,
            layout,
            closing: false,
            total_worker_deaths: 0,
            last_outer_step_seconds: None,
            last_publish_seconds: None,
            last_checkpoint_round,
            stream_owner: None,
            stats,
            losses: LossAverages::default(),
            token_budget: config.training.token_budget,
            budget_stop_sent: false,
        };
        let coordinator = Arc::new(Self {
            device,
            shared: Mutex::new(shared),
            work: Mutex::new(work),
            tensors: Mutex::new(None),
            published: watch::Sender::new(None),
            staging: StagingPool::new(config.limits.staged_uploads),
            streaming: watch::Sender::new(false),
            started_at: Timestamp::now(),
            started: now,
            audit: Arc::new(AuditLog::start(
                config.audit.path.as_deref(),
                metrics.audit_write_failures.clone(),
                metrics.audit_records_dropped.clone(),
            )),
            metrics,
            next_command_id: AtomicU64::new(first_command_id()),
            shutdown: watch::Sender::new(false),
            definition: definition.map(Arc::new),
            config,
        });
        if let Some(state) = state {
            let round = lock(&coordinator.shared).round.number;
            coordinator.reserve_staging(state.layout());
            coordinator.publish(&state, round);
            *lock(&coordinator.tensors) = Some(state);
        }
        coordinator.update_gauges(&lock(&coordinator.shared));
        coordinator
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The model definition bundle, if one is configured.
    pub fn model_definition(&self) -> Option<Arc<ModelDefinition>> {
        self.definition.clone()
    }

    /// `/info.model_hash`: the parameters' names and shapes, folded with the definition
    /// bundle's hash when there is one (`None` until the model is initialized).
    fn model_hash(&self, layout: Option<&ModelLayout>) -> Option<String> {
        let param_hash = layout?.hash();
        Some(match &self.definition {
            Some(definition) => model_hash(&param_hash, definition.bundle_hash()),
            None => param_hash,
        })
    }

    /// Prometheus metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Queues an audit record (written by the audit log's own thread).
    pub fn audit(&self, record: AuditRecord) {
        self.audit.record(record);
    }

    /// The audit log, for those who record without the engine (authentication).
    pub fn audit_log(&self) -> Arc<AuditLog> {
        self.audit.clone()
    }

    /// The latest published θ, if the model is initialized and no new θ is being encoded.
    pub fn current(&self) -> Option<Arc<Published>> {
        self.published.borrow().clone()
    }

    /// Whether the model's parameters exist (from a file, a checkpoint or `/init_params`).
    pub fn is_initialized(&self) -> bool {
        lock(&self.shared).layout.is_some()
    }

    /// The latest published θ. While a new θ is being encoded (the old one is released first,
    /// so memory holds one encoded copy, not two), waits for it.
    pub async fn latest(&self) -> Result<Arc<Published>, EngineError> {
        if let Some(published) = self.current() {
            return Ok(published);
        }
        if !self.is_initialized() {
            return Err(EngineError::Uninitialized);
        }
        let mut receiver = self.published.subscribe();
        let published = receiver.wait_for(Option::is_some);
        match tokio::time::timeout(self.round_wait_timeout(), published).await {
            Ok(Ok(published)) => published.clone().ok_or(EngineError::Uninitialized),
            Ok(Err(_)) => Err(EngineError::Stopped),
            Err(_) => Err(EngineError::PublishTimeout),
        }
    }

    fn publish(&self, state: &OuterState, round: u64) {
        // Drop our reference to the previous encoding before making the next one: responses
        // still streaming it keep it alive, but nothing else does. When none does, its buffer
        // is reused.
        let mut buffer = self
            .published
            .send_replace(None)
            .and_then(|previous| Arc::try_unwrap(previous).ok())
            .and_then(Published::into_buffer)
            .unwrap_or_default();
        let metadata = BTreeMap::from([
            ("format".to_string(), "pt".to_string()),
            ("round".to_string(), round.to_string()),
        ]);
        state.encode_into(self.config.training.download_dtype, &metadata, &mut buffer);
        self.published
            .send_replace(Some(Arc::new(Published::new(round, buffer))));
    }

    fn update_gauges(&self, shared: &Shared) {
        self.metrics.round.set(shared.round.number as i64);
        self.metrics
            .registered_workers
            .set(shared.roster.workers.len() as i64);
    }

    fn sync_timeout(&self) -> Duration {
        Duration::from_secs(self.config.training.sync_timeout_seconds)
    }

    fn heartbeat_timeout(&self) -> Duration {
        Duration::from_secs(self.config.training.heartbeat_timeout_seconds)
    }

    /// Asks the server to stop (the `shutdown` control action, SIGTERM).
    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves when a shutdown was requested.
    pub async fn shutdown_requested(&self) {
        let mut receiver = self.shutdown.subscribe();
        let _ = receiver.wait_for(|stop| *stop).await;
    }
}

/// Microseconds since the epoch now (1 if the clock is before it).
fn first_command_id() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
}
