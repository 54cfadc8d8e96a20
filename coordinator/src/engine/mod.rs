//! The round engine: registration, heartbeats, eviction, the sync barrier and the outer step.
//!
//! Two locks, always taken in this order when both are needed:
//! - `tensors` (the [`OuterState`]) is held for the slow work — folding an upload, the outer
//!   step, encoding, checkpointing — and only on blocking threads;
//! - `shared` (roster, round, settings) is held only for short bookkeeping, so heartbeats,
//!   registrations and `/status` never wait for tensor work.
//!
//! After a round closes, θ is encoded once into [`Published`] and every waiting worker gets
//! the same bytes.

mod control;
mod published;
pub mod roster;
pub mod round;
mod status;

pub use published::Published;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::watch;
use tracing::{info, warn};

pub use control::ControlAction;
use roster::{Roster, Worker};
use round::Round;

use crate::api_error::ApiError;
use crate::audit::{AuditLog, AuditRecord};
use crate::checkpoint::{self, CheckpointMeta, Loaded, RosterEntry};
use crate::config::Config;
use crate::fold::StreamStore;
use crate::identity::Caller;
use crate::metrics::Metrics;
use crate::model::ModelLayout;
use crate::outer_optimizer::OuterOptimizer;
use crate::outer_state::OuterState;
use crate::staging::{StagingBuffer, StagingPool};
use crate::upload::{Expectation, StagedUpload};
use crate::wire::frame::FrameHeader;

pub use crate::wire::messages::{HeartbeatRequest, RegisterRequest};

/// Why a worker left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Departure {
    /// It called `/deregister`.
    Deregistered,
    /// No heartbeat within the timeout.
    Evicted,
    /// `/control/kick_worker`.
    Kicked,
}

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
}

/// The coordinator's state and operations. Cheap to share behind an `Arc`.
pub struct Coordinator {
    config: Config,
    device: tch::Device,
    shared: Mutex<Shared>,
    tensors: Mutex<Option<OuterState>>,
    published: watch::Sender<Option<Arc<Published>>>,
    staging: Arc<StagingPool>,
    /// Mirrors `Shared::stream_owner.is_some()` for uploads waiting to fold.
    streaming: watch::Sender<bool>,
    started_at: Timestamp,
    started: Instant,
    metrics: Metrics,
    audit: AuditLog,
    bulk: std::sync::OnceLock<crate::http::BulkAdvert>,
    shutdown: watch::Sender<bool>,
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
        let now = Instant::now();
        let metrics = Metrics::new();
        let mut optimizer = config.training.outer_optimizer;
        let mut round = Round::new(0, []);
        let mut roster = Roster::default();
        let mut state = None;
        let mut last_checkpoint_round = None;
        if let Some(loaded) = restored {
            let layout = Arc::new(loaded.layout);
            optimizer = loaded.meta.optimizer;
            for entry in &loaded.meta.roster {
                let required = required_params(&layout, entry.slice.as_deref());
                let mut worker = Worker::new(Arc::new(required), now);
                worker.hostname = entry.hostname.clone();
                worker.output_dir = entry.output_dir.clone();
                worker.owner = entry.owner.clone();
                worker.restored = true;
                roster.insert(&entry.worker_id, worker);
            }
            round = Round::new(loaded.meta.round, roster.workers.keys().cloned());
            last_checkpoint_round = Some(loaded.meta.round);
            info!(
                path = %loaded.path.display(),
                round = loaded.meta.round,
                workers = loaded.meta.roster.len(),
                "resumed from checkpoint"
            );
            state = Some(OuterState::restore(
                layout,
                &loaded.theta,
                &loaded.momentum,
                loaded.momentum_ready,
                device,
            ));
        } else if let Some(upload) = initial {
            let layout = upload.layout.clone().map(Arc::new);
            if let Some(layout) = layout {
                state = Some(OuterState::from_upload(layout, &upload, device));
            }
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
        };
        let coordinator = Arc::new(Self {
            device,
            shared: Mutex::new(shared),
            tensors: Mutex::new(None),
            published: watch::Sender::new(None),
            staging: StagingPool::new(config.limits.staged_uploads),
            streaming: watch::Sender::new(false),
            started_at: Timestamp::now(),
            started: now,
            audit: AuditLog::start(
                config.audit.path.as_deref(),
                metrics.audit_write_failures.clone(),
                metrics.audit_records_dropped.clone(),
            ),
            metrics,
            bulk: std::sync::OnceLock::new(),
            shutdown: watch::Sender::new(false),
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

    /// Prometheus metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Records where the bulk plane listens (once, before serving).
    pub fn advertise_bulk(&self, advert: crate::http::BulkAdvert) {
        let _ = self.bulk.set(advert);
    }

    /// Where the bulk plane listens, if there is one.
    pub fn bulk_advert(&self) -> Option<crate::http::BulkAdvert> {
        self.bulk.get().cloned()
    }

    /// Queues an audit record (written by the audit log's own thread).
    pub fn audit(&self, record: AuditRecord) {
        self.audit.record(record);
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
    pub async fn latest(&self) -> Result<Arc<Published>, ApiError> {
        if let Some(published) = self.current() {
            return Ok(published);
        }
        if !self.is_initialized() {
            return Err(ApiError::uninitialized());
        }
        let mut receiver = self.published.subscribe();
        let published = receiver.wait_for(Option::is_some);
        match tokio::time::timeout(self.round_wait_timeout(), published).await {
            Ok(Ok(published)) => published.clone().ok_or_else(ApiError::uninitialized),
            Ok(Err(_)) => Err(ApiError::internal("the coordinator is shutting down")),
            Err(_) => Err(ApiError::new(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                "the new parameters were not published in time",
            )),
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

    /// Registers a worker for `caller` (who then owns it) and returns the parameters it starts
    /// from. A registration during an outer step waits for the step, so a joiner never starts
    /// from parameters about to change.
    pub async fn register(
        &self,
        request: RegisterRequest,
        caller: &Caller,
    ) -> Result<Arc<Published>, ApiError> {
        validate_worker_id(&request.worker_id)?;
        caller.check_worker_id(&request.worker_id)?;
        if request.group.is_some() {
            return Err(ApiError::bad_request(
                "pipeline-parallel groups are not supported yet: register each rank without `group`",
            ));
        }
        let wait_for = {
            let mut shared = lock(&self.shared);
            let layout = shared.layout.clone().ok_or_else(ApiError::uninitialized)?;
            let required = match &request.param_shapes {
                None => (0..layout.params().len()).collect(),
                Some(shapes) => slice_of(&layout, shapes)?,
            };
            let id = request.worker_id.clone();
            if let Some(existing) = shared.roster.workers.get(&id) {
                caller.check_acts_for(&id, existing.owner.as_deref())?;
                if !existing.restored {
                    return Err(ApiError::conflict(format!(
                        "worker {id} is already registered; if it restarted, wait for the heartbeat \
                         timeout ({}s) to evict the old registration or POST /deregister first",
                        self.config.training.heartbeat_timeout_seconds
                    )));
                }
            } else if shared.roster.workers.len() >= self.config.limits.max_workers {
                return Err(ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the coordinator already has limits.max_workers={} workers",
                        self.config.limits.max_workers
                    ),
                ));
            }
            let mut worker = Worker::new(Arc::new(required), Instant::now());
            worker.hostname = request.hostname;
            worker.output_dir = request.output_dir;
            worker.extra = request.extra;
            worker.owner = Some(caller.identity().to_string());
            shared.roster.insert(&id, worker);
            if shared
                .round
                .open_to_joiners(self.config.training.min_workers)
            {
                shared.round.participants.insert(id.clone());
            }
            shared.num_workers = shared.num_workers.max(shared.roster.workers.len());
            info!(worker_id = %id, round = shared.round.number, workers = shared.roster.workers.len(), "worker registered");
            self.update_gauges(&shared);
            shared.closing.then_some(shared.round.number)
        };
        match wait_for {
            Some(round) => self.await_round_after(round, self.sync_timeout()).await,
            None => self.latest().await,
        }
    }

    /// Records a heartbeat from `caller`; returns the reply body.
    pub fn heartbeat(
        &self,
        request: HeartbeatRequest,
        caller: &Caller,
    ) -> Result<serde_json::Value, ApiError> {
        let mut shared = lock(&self.shared);
        let registered = shared.roster.workers.len();
        let (round, num_workers) = (shared.round.number, shared.num_workers);
        let worker = shared
            .roster
            .workers
            .get_mut(&request.worker_id)
            .ok_or_else(|| ApiError::unknown_worker(&request.worker_id))?;
        caller.check_acts_for(&request.worker_id, worker.owner.as_deref())?;
        worker.touch(Instant::now());
        worker.last_heartbeat = Timestamp::now();
        if let Some(sps) = request.steps_per_second.filter(|v| v.is_finite()) {
            worker.steps_per_second = Some(sps);
        }
        if let Some(stats) = &request.stats {
            worker.record_stats(stats);
        }
        let mut reply = serde_json::json!({
            "status": "ok",
            "sync_round": round,
            "num_workers": num_workers,
            "num_registered": registered,
        });
        if let Some(command) = worker.command.take() {
            reply["command"] = command.into();
        }
        Ok(reply)
    }

    /// Removes a worker for `caller`, its owner or an admin (a no-op for unknown ids, as in
    /// forgather).
    pub fn deregister(self: &Arc<Self>, worker_id: &str, caller: &Caller) -> Result<(), ApiError> {
        let removed = self.remove_worker(worker_id, Departure::Deregistered, Some(caller))?;
        if removed {
            self.close_round_if_ready_in_background();
        }
        Ok(())
    }

    /// The death path shared by deregistration, eviction and kicks. Returns whether the
    /// worker was registered. With `caller`, it must be allowed to remove the worker (checked
    /// under the same lock as the removal).
    fn remove_worker(
        &self,
        worker_id: &str,
        why: Departure,
        caller: Option<&Caller>,
    ) -> Result<bool, ApiError> {
        let mut shared = lock(&self.shared);
        if let (Some(caller), Some(worker)) = (caller, shared.roster.workers.get(worker_id)) {
            caller.check_may_remove(worker_id, worker.owner.as_deref())?;
        }
        if !shared.roster.remove(worker_id) {
            return Ok(false);
        }
        shared.round.forget(worker_id);
        if shared.stream_owner.as_deref() == Some(worker_id) {
            self.release_stream(&mut shared);
        }
        shared.total_worker_deaths += 1;
        shared.num_workers = shared
            .roster
            .workers
            .len()
            .max(self.config.training.min_workers);
        let event = match why {
            Departure::Evicted => "eviction",
            Departure::Deregistered => "deregister",
            Departure::Kicked => "kick",
        };
        let round = shared.round.number;
        self.audit(
            AuditRecord::new(event)
                .worker(worker_id)
                .round(round)
                .caller(caller.map(|c| c.identity().to_string())),
        );
        if why == Departure::Evicted {
            self.metrics.evictions.inc();
            warn!(
                worker_id,
                timeout_seconds = self.config.training.heartbeat_timeout_seconds,
                "worker evicted: no heartbeat"
            );
        } else {
            info!(worker_id, reason = ?why, "worker left");
        }
        self.update_gauges(&shared);
        Ok(true)
    }

    /// Starts an upload from `worker_id`: refuses unknown workers, callers other than the one
    /// that registered it and second uploads in the same round before any tensor data is read.
    /// `caller` is `None` on a listener without authentication (a cleartext bulk plane), where
    /// nobody can be told apart.
    pub fn begin_upload(
        self: &Arc<Self>,
        frame: &FrameHeader,
        caller: Option<&Caller>,
    ) -> Result<UploadTicket, ApiError> {
        let worker_id = frame.worker_id.as_str();
        let mut shared = lock(&self.shared);
        let layout = shared.layout.clone().ok_or_else(ApiError::uninitialized)?;
        let round = shared.round.number;
        check_round(frame, round)?;
        let worker = shared
            .roster
            .workers
            .get_mut(worker_id)
            .ok_or_else(|| ApiError::unknown_worker(worker_id))?;
        if let Some(caller) = caller {
            caller.check_acts_for(worker_id, worker.owner.as_deref())?;
        }
        worker.touch(Instant::now());
        let required = worker.required.clone();
        if shared.round.contributed.contains(worker_id) {
            return Err(ApiError::conflict(format!(
                "worker {worker_id} already submitted in round {round}; wait for the round to close"
            ))
            .kind("duplicate_submission"));
        }
        if !shared.receiving.insert(worker_id.to_string()) {
            return Err(ApiError::conflict(format!(
                "an upload from worker {worker_id} is already in progress"
            ))
            .kind("duplicate_submission"));
        }
        // The round's first upload is stored as it arrives instead of being staged.
        let streaming = shared.round.contributed.is_empty() && shared.stream_owner.is_none();
        if streaming {
            shared.stream_owner = Some(worker_id.to_string());
            self.streaming.send_replace(true);
        }
        Ok(UploadTicket {
            coordinator: self.clone(),
            worker_id: worker_id.to_string(),
            round,
            streaming,
            expectation: Expectation::PseudoGradient {
                layout,
                dtype: self.config.training.upload_dtype,
                required,
            },
            finished: false,
        })
    }

    fn reserve_staging(&self, layout: &ModelLayout) {
        let bytes = layout.total_elements() * self.config.training.upload_dtype.size();
        self.staging.reserve(bytes);
        info!(
            buffers = self.config.limits.staged_uploads,
            bytes, "receive buffers reserved"
        );
    }

    /// Waits for one of the `limits.staged_uploads` receive buffers.
    pub async fn staging_buffer(&self) -> StagingBuffer {
        self.staging.acquire().await
    }

    /// Waits until no upload is being streamed into the accumulator.
    pub async fn stream_finished(&self) {
        let mut receiver = self.streaming.subscribe();
        let _ = receiver.wait_for(|streaming| !*streaming).await;
    }

    fn release_stream(&self, shared: &mut Shared) {
        shared.stream_owner = None;
        self.streaming.send_replace(false);
    }

    /// Stores the next validated piece of a streamed upload (the round's first) into the
    /// accumulator. Fails if the upload lost its place (its worker was evicted, the round
    /// moved on), after which nothing more of it is stored.
    pub fn store_streamed(
        &self,
        ticket: &UploadTicket,
        store: &mut StreamStore,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), ApiError> {
        let mut tensors = lock(&self.tensors);
        let state = tensors.as_mut().ok_or_else(ApiError::uninitialized)?;
        {
            let shared = lock(&self.shared);
            if shared.stream_owner.as_deref() != Some(ticket.worker_id.as_str())
                || shared.round.number != ticket.round
            {
                return Err(ApiError::conflict(format!(
                    "worker {} left or round {} ended while its upload was arriving",
                    ticket.worker_id, ticket.round
                )));
            }
        }
        state.store_streamed(store, offset, bytes);
        Ok(())
    }

    /// Folds a complete upload into the round (blocking: run it off the async threads).
    /// Returns the round it joined. Closes the round if it was the last one needed.
    /// `None` when a streamed upload is still arriving: wait for [`Self::stream_finished`]
    /// and call again.
    pub fn complete_upload(
        &self,
        ticket: &mut UploadTicket,
        upload: &StagedUpload,
    ) -> Result<Option<u64>, ApiError> {
        let result = self.fold_and_maybe_close(ticket, upload);
        if !matches!(result, Ok(None)) {
            let mut shared = lock(&self.shared);
            shared.receiving.remove(&ticket.worker_id);
            if ticket.streaming && shared.stream_owner.as_deref() == Some(&ticket.worker_id) {
                self.release_stream(&mut shared);
            }
            ticket.finished = true;
        }
        result
    }

    fn fold_and_maybe_close(
        &self,
        ticket: &UploadTicket,
        upload: &StagedUpload,
    ) -> Result<Option<u64>, ApiError> {
        let worker_id = ticket.worker_id.as_str();
        let mut tensors = lock(&self.tensors);
        let state = tensors.as_mut().ok_or_else(ApiError::uninitialized)?;
        let round = {
            let shared = lock(&self.shared);
            match (&shared.stream_owner, ticket.streaming) {
                (Some(owner), false) if owner != worker_id => return Ok(None),
                (owner, true) if owner.as_deref() != Some(worker_id) => {
                    return Err(ApiError::conflict(format!(
                        "worker {worker_id} left or round {} ended while its upload was arriving",
                        ticket.round
                    )));
                }
                _ => {}
            }
            // The round may have closed (sync timeout) while this upload was arriving.
            check_round(&upload.frame, shared.round.number)?;
            if !shared.roster.workers.contains_key(worker_id) {
                return Err(ApiError::unknown_worker(worker_id));
            }
            if shared.round.contributed.contains(worker_id) {
                return Err(ApiError::conflict(format!(
                    "worker {worker_id} already submitted in round {}",
                    shared.round.number
                )));
            }
            shared.round.number
        };
        if ticket.streaming {
            state.count_streamed(&upload.tensors);
        } else {
            let started = Instant::now();
            state.fold(upload);
            self.metrics
                .fold_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        self.metrics.upload_bytes.inc_by(upload.data_len as u64);
        let ready = {
            let mut shared = lock(&self.shared);
            let now = Instant::now();
            shared.round.record_contribution(worker_id, now);
            if let Some(worker) = shared.roster.workers.get_mut(worker_id) {
                worker.last_sync_round = Some(round);
                worker.touch(now);
            }
            self.ready_to_close(&shared, now)
        };
        if ready {
            self.close_round(state)?;
        }
        Ok(Some(round))
    }

    fn ready_to_close(&self, shared: &Shared, now: Instant) -> bool {
        !shared.closing
            && shared.round.ready_to_close(
                self.config.training.min_workers,
                self.sync_timeout(),
                now,
            )
    }

    /// Runs the outer step, publishes θ and opens the next round. Needs the tensors lock.
    fn close_round(&self, state: &mut OuterState) -> Result<(), ApiError> {
        let (optimizer, round, contributors) = {
            let mut shared = lock(&self.shared);
            shared.closing = true;
            (
                shared.optimizer,
                shared.round.number,
                shared.round.contributed.len(),
            )
        };
        let started = Instant::now();
        let report = state.step(&optimizer).map_err(|e| {
            lock(&self.shared).closing = false;
            ApiError::internal(format!("the outer step failed: {e}"))
        })?;
        let step_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        self.publish(state, round + 1);
        let publish_seconds = started.elapsed().as_secs_f64();
        let due = {
            let mut shared = lock(&self.shared);
            let participants = shared.roster.workers.keys().cloned().collect::<Vec<_>>();
            shared.round = Round::new(round + 1, participants);
            shared.closing = false;
            shared.last_outer_step_seconds = Some(step_seconds);
            shared.last_publish_seconds = Some(publish_seconds);
            self.update_gauges(&shared);
            let every = self.config.checkpoint.every_rounds;
            every > 0 && (round + 1) % every == 0
        };
        self.metrics.outer_steps.inc();
        self.metrics.outer_step_seconds.observe(step_seconds);
        self.audit(
            AuditRecord::new("outer_step")
                .round(round + 1)
                .details(serde_json::json!({
                    "contributors": contributors,
                    "seconds": step_seconds,
                    "publish_seconds": publish_seconds,
                    "parameters_without_contribution": report.missing.len(),
                })),
        );
        if report.missing.is_empty() {
            info!(round = round + 1, contributors, step_seconds, "outer step");
        } else {
            warn!(round = round + 1, contributors, missing = ?report.missing, "outer step with parameters nobody sent");
        }
        if due {
            self.save_checkpoint(state);
        }
        Ok(())
    }

    /// Writes a checkpoint if a directory is configured; failures are logged and counted.
    fn save_checkpoint(&self, state: &OuterState) -> Option<u64> {
        let dir = self.config.checkpoint.dir.as_ref()?;
        let meta = {
            let shared = lock(&self.shared);
            CheckpointMeta {
                round: shared.round.number,
                optimizer: shared.optimizer,
                roster: shared
                    .roster
                    .workers
                    .iter()
                    .map(|(id, w)| RosterEntry {
                        worker_id: id.clone(),
                        hostname: w.hostname.clone(),
                        output_dir: w.output_dir.clone(),
                        owner: w.owner.clone(),
                        slice: (w.required.len() != state.layout().params().len()).then(|| {
                            w.required
                                .iter()
                                .map(|p| state.layout().params()[*p].name.clone())
                                .collect()
                        }),
                    })
                    .collect(),
            }
        };
        let started = Instant::now();
        match checkpoint::save(dir, state, &meta, self.config.checkpoint.keep) {
            Ok(path) => {
                self.metrics.checkpoints_saved.inc();
                lock(&self.shared).last_checkpoint_round = Some(meta.round);
                info!(path = %path.display(), round = meta.round, seconds = started.elapsed().as_secs_f64(), "checkpoint saved");
                Some(meta.round)
            }
            Err(error) => {
                self.metrics.checkpoint_failures.inc();
                warn!(%error, "checkpoint failed");
                None
            }
        }
    }

    /// Saves a checkpoint now (shutdown, `/control/save_state`). Blocking.
    pub fn checkpoint_now(&self) -> Option<u64> {
        let tensors = lock(&self.tensors);
        self.save_checkpoint(tensors.as_ref()?)
    }

    /// Closes the round if its barrier is met. Blocking (it may run the outer step).
    pub fn close_round_if_ready(&self) -> Result<(), ApiError> {
        let mut tensors = lock(&self.tensors);
        let Some(state) = tensors.as_mut() else {
            return Ok(());
        };
        let ready = self.ready_to_close(&lock(&self.shared), Instant::now());
        if ready {
            self.close_round(state)
        } else {
            Ok(())
        }
    }

    fn close_round_if_ready_in_background(self: &Arc<Self>) {
        let ready = self.ready_to_close(&lock(&self.shared), Instant::now());
        if ready {
            let this = self.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(error) = this.close_round_if_ready() {
                    warn!(%error, "closing the round failed");
                }
            });
        }
    }

    /// Periodic work: evict silent workers, close rounds whose sync timeout passed.
    pub fn tick(self: &Arc<Self>) {
        let stale = lock(&self.shared)
            .roster
            .stale(self.heartbeat_timeout(), Instant::now());
        for worker_id in stale {
            // Without a caller nothing is checked, so this cannot fail.
            let _ = self.remove_worker(&worker_id, Departure::Evicted, None);
        }
        self.close_round_if_ready_in_background();
    }

    /// Waits until a round after `round` has been published.
    pub async fn await_round_after(
        &self,
        round: u64,
        timeout: Duration,
    ) -> Result<Arc<Published>, ApiError> {
        let mut receiver = self.published.subscribe();
        let mut shutdown = self.shutdown.subscribe();
        let newer = receiver.wait_for(|p| p.as_ref().is_some_and(|p| p.round > round));
        tokio::select! {
            result = tokio::time::timeout(timeout, newer) => match result {
                Ok(Ok(published)) => published.clone().ok_or_else(ApiError::uninitialized),
                Ok(Err(_)) => Err(ApiError::internal("the coordinator is shutting down")),
                Err(_) => Err(ApiError::new(
                    axum::http::StatusCode::GATEWAY_TIMEOUT,
                    format!("Sync timeout: round {round} did not close within {}s; your upload stays counted", timeout.as_secs()),
                )),
            },
            _ = shutdown.wait_for(|stop| *stop) => Err(ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "the coordinator is shutting down; retry after it restarts",
            )),
        }
    }

    /// How long a submitter waits for its round before a 504.
    pub fn round_wait_timeout(&self) -> Duration {
        self.sync_timeout() + self.heartbeat_timeout() + Duration::from_secs(60)
    }

    /// Defines the model from the first worker's parameters. Blocking.
    pub fn initialize(&self, upload: StagedUpload) -> Result<Arc<Published>, ApiError> {
        let mut tensors = lock(&self.tensors);
        if tensors.is_some() {
            return Err(ApiError::conflict(
                "the coordinator already has parameters; GET /global_params",
            )
            .kind("already_initialized"));
        }
        let layout = Arc::new(
            upload
                .layout
                .clone()
                .ok_or_else(|| ApiError::bad_request("no tensors"))?,
        );
        let state = OuterState::from_upload(layout.clone(), &upload, self.device);
        drop(upload.data);
        self.reserve_staging(&layout);
        let round = {
            let mut shared = lock(&self.shared);
            shared.layout = Some(layout.clone());
            shared.round.number
        };
        self.publish(&state, round);
        info!(
            worker_id = %upload.frame.worker_id,
            parameters = layout.params().len(),
            elements = layout.total_elements(),
            "model initialized from a worker's parameters"
        );
        self.save_checkpoint(&state);
        *tensors = Some(state);
        self.current().ok_or_else(ApiError::uninitialized)
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

/// An upload in progress. Dropping it without [`Coordinator::complete_upload`] (a refused
/// or broken upload) frees the worker to try again.
pub struct UploadTicket {
    coordinator: Arc<Coordinator>,
    worker_id: String,
    /// The round it was started in.
    round: u64,
    /// It is the round's first upload and is stored into the accumulator as it arrives.
    pub streaming: bool,
    /// What the upload must contain.
    pub expectation: Expectation,
    finished: bool,
}

impl Drop for UploadTicket {
    fn drop(&mut self) {
        if !self.finished {
            let mut shared = lock(&self.coordinator.shared);
            shared.receiving.remove(&self.worker_id);
            if self.streaming && shared.stream_owner.as_deref() == Some(&self.worker_id) {
                self.coordinator.release_stream(&mut shared);
            }
        }
    }
}

/// A pseudo-gradient computed from another round's parameters is refused (when the worker
/// says which round it used), never folded against parameters it does not belong to.
fn check_round(frame: &FrameHeader, round: u64) -> Result<(), ApiError> {
    match frame.round {
        Some(theirs) if theirs != round => Err(ApiError::conflict(format!(
            "this pseudo-gradient was computed from round {theirs}, the coordinator is at round {round}; \
             GET /global_params and train from there"
        ))
        .kind("stale_round")),
        _ => Ok(()),
    }
}

fn validate_worker_id(id: &str) -> Result<(), ApiError> {
    if crate::wire::messages::valid_worker_id(id) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "worker_id must be 1-253 characters of letters, digits and - _ . : @",
        ))
    }
}

/// The parameter indices named by `names` (all when `None`), skipping unknown names.
fn required_params(layout: &ModelLayout, names: Option<&[String]>) -> Vec<usize> {
    match names {
        None => (0..layout.params().len()).collect(),
        Some(names) => names.iter().filter_map(|n| layout.index_of(n)).collect(),
    }
}

/// A worker's declared slice, checked against the model (forgather's slice fingerprint).
fn slice_of(
    layout: &ModelLayout,
    shapes: &BTreeMap<String, Vec<usize>>,
) -> Result<Vec<usize>, ApiError> {
    let mut slice = Vec::with_capacity(shapes.len());
    for (name, shape) in shapes {
        let mismatch = |detail: String| {
            ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                format!("param_shapes do not match the coordinator's model: {detail}"),
            )
            .kind("slice_mismatch")
        };
        let index = layout
            .index_of(name)
            .ok_or_else(|| mismatch(format!("unknown parameter {name}")))?;
        let expected = &layout.params()[index].shape;
        if expected != shape {
            return Err(mismatch(format!(
                "{name} has shape {shape:?}, the model's is {expected:?}"
            )));
        }
        slice.push(index);
    }
    Ok(slice)
}
