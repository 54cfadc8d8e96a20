//! A DiLoCo worker around any set of tch parameters: join, train `sync_every` inner steps,
//! [`DilocoWorker::sync`], repeat.
//!
//! `sync` sends the pseudo-gradient (parameters at the last sync minus the live ones) and
//! loads the averaged parameters that come back. It survives a coordinator restart: it
//! retries with backoff while the coordinator is unreachable, registers again if the
//! coordinator forgot it, and resubmits the same pseudo-gradient if the coordinator is still at
//! the round it was computed from (otherwise it adopts the coordinator's parameters and the
//! local steps of that round are dropped, never applied against the wrong parameters).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use diloco_contract::api::{ErrorKind, HeartbeatRequest, RegisterRequest, RelayedCommand};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::commands::CommandInbox;
use crate::coordinator_client::{ClientError, CoordinatorClient, ParamsBlob};
use crate::tensors::{Named, TensorError, decode_safetensors, pseudo_gradient_frame};
use crate::wire::dtype::WireDtype;
use crate::wire::frame::{FrameHeader, PayloadFormat};

/// Worker errors.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error("the coordinator's parameters do not match this model: {0}")]
    ModelMismatch(String),
    #[error("the coordinator announces wire format {0}, which this client does not know")]
    WireFormat(String),
    #[error("gave up after {0:?} without reaching the coordinator: {1}")]
    GaveUp(Duration, ClientError),
}

/// How a worker joins and behaves.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Unique id of this worker.
    pub worker_id: String,
    /// Hostname reported at registration.
    pub hostname: Option<String>,
    /// Send this worker's parameters as the initial ones if the coordinator has none.
    pub initialize: bool,
    /// Heartbeat period; default a quarter of the coordinator's heartbeat timeout.
    pub heartbeat_interval: Option<Duration>,
    /// How long `sync` keeps retrying while the coordinator is unreachable.
    pub reconnect_budget: Duration,
}

impl WorkerOptions {
    /// Defaults for `worker_id`.
    pub fn new(worker_id: impl Into<String>) -> Self {
        Self {
            worker_id: worker_id.into(),
            hostname: None,
            initialize: true,
            heartbeat_interval: None,
            reconnect_budget: Duration::from_secs(300),
        }
    }
}

/// What a sync did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncReport {
    /// The round of the parameters now loaded.
    pub round: u64,
    /// The pseudo-gradient was folded in (false: the coordinator had moved on or lost the
    /// round, and the local steps were dropped).
    pub contributed: bool,
    /// Bytes uploaded.
    pub upload_bytes: usize,
}

/// A worker in a DiLoCo run.
pub struct DilocoWorker {
    client: Arc<CoordinatorClient>,
    options: WorkerOptions,
    sync_every: u64,
    upload_dtype: WireDtype,
    round: u64,
    /// Parameters at the last sync (fp32, CPU), in the order of the live parameters.
    snapshot: Vec<Named>,
    steps_since_sync: Arc<std::sync::atomic::AtomicU64>,
    forgotten: Arc<AtomicBool>,
    /// Commands relayed in heartbeat replies, filled by the heartbeat task.
    commands: Arc<Mutex<CommandInbox>>,
    heartbeat: JoinHandle<()>,
}

impl Drop for DilocoWorker {
    fn drop(&mut self) {
        self.heartbeat.abort();
    }
}

fn shapes(params: &[Named]) -> std::collections::BTreeMap<String, Vec<usize>> {
    params
        .iter()
        .map(|(n, t)| (n.clone(), t.size().iter().map(|d| *d as usize).collect()))
        .collect()
}

impl DilocoWorker {
    /// Joins the run: adopts the server's settings, sends this model's parameters as the
    /// initial ones if the coordinator has none (and `options.initialize`), registers, and
    /// loads the coordinator's parameters into `params`.
    pub async fn join(
        client: CoordinatorClient,
        options: WorkerOptions,
        params: &[Named],
    ) -> Result<Self, WorkerError> {
        let client = Arc::new(client);
        let info = client.with_retries(|| client.info()).await?;
        let settings = info.expected_client_settings;
        // Every tensor request asks for safetensors (`?wire_format=`), so either announced
        // codec works; an unknown one means a newer protocol.
        if PayloadFormat::parse(&settings.wire_format).is_none() {
            return Err(WorkerError::WireFormat(settings.wire_format));
        }
        if !info.parameters_initialized && options.initialize {
            let header = FrameHeader {
                worker_id: options.worker_id.clone(),
                fragment_id: None,
                fmt: PayloadFormat::Safetensors,
                round: None,
            };
            let frame = crate::tensors::encode_frame(&header, params, WireDtype::Fp32)?;
            match client.init_params(Bytes::from(frame)).await {
                Ok(_) => info!(worker_id = %options.worker_id, "sent the initial parameters"),
                Err(e) if e.is(ErrorKind::AlreadyInitialized) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let registration = RegisterRequest {
            worker_id: options.worker_id.clone(),
            hostname: options.hostname.clone(),
            param_shapes: Some(shapes(params)),
            ..RegisterRequest::default()
        };
        let start = client
            .with_retries(|| client.register(&registration))
            .await?;
        let heartbeat_every = options
            .heartbeat_interval
            .unwrap_or(Duration::from_secs(settings.heartbeat_timeout).div_f64(4.0))
            .max(Duration::from_millis(100));
        let forgotten = Arc::new(AtomicBool::new(false));
        let steps = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let commands = Arc::new(Mutex::new(CommandInbox::default()));
        let heartbeat = tokio::spawn(heartbeat_loop(
            client.clone(),
            options.worker_id.clone(),
            heartbeat_every,
            Beat {
                forgotten: forgotten.clone(),
                steps: steps.clone(),
                commands: commands.clone(),
            },
        ));
        let mut worker = Self {
            client,
            options,
            sync_every: settings.sync_every,
            upload_dtype: settings.upload_dtype,
            round: 0,
            snapshot: Vec::new(),
            steps_since_sync: steps,
            forgotten,
            commands,
            heartbeat,
        };
        worker.load(&start, params)?;
        info!(worker_id = %worker.options.worker_id, round = worker.round, sync_every = worker.sync_every, "joined");
        Ok(worker)
    }

    /// Inner steps per round, as the coordinator announced.
    pub fn sync_every(&self) -> u64 {
        self.sync_every
    }

    /// The round of the parameters currently loaded.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The coordinator client.
    pub fn client(&self) -> &CoordinatorClient {
        &self.client
    }

    /// Counts an inner step (reported as steps per second in heartbeats).
    pub fn record_step(&self) {
        self.steps_since_sync.fetch_add(1, Ordering::Relaxed);
    }

    /// A command an admin relayed through the coordinator (`save_checkpoint`,
    /// `save_and_stop` or `abort`), oldest first; `None` if there is none. Acting on it is
    /// the training loop's job: save and go on, save and [`DilocoWorker::leave`], or leave.
    pub fn next_command(&self) -> Option<RelayedCommand> {
        self.commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Loads `blob` into the live parameters and takes the snapshot.
    fn load(&mut self, blob: &ParamsBlob, params: &[Named]) -> Result<(), WorkerError> {
        let mut fresh = decode_safetensors(&blob.bytes)?;
        let mut snapshot = Vec::with_capacity(params.len());
        for (name, live) in params {
            let value = fresh.remove(name).ok_or_else(|| {
                WorkerError::ModelMismatch(format!("the coordinator sent no {name}"))
            })?;
            if value.size() != live.size() {
                return Err(WorkerError::ModelMismatch(format!(
                    "{name}: coordinator shape {:?}, local {:?}",
                    value.size(),
                    live.size()
                )));
            }
            tch::no_grad(|| live.shallow_clone().f_copy_(&value)).map_err(TensorError::from)?;
            snapshot.push((name.clone(), value));
        }
        self.snapshot = snapshot;
        self.round = blob.round;
        Ok(())
    }

    /// Sends the pseudo-gradient of the last `sync_every` steps and loads the new parameters.
    pub async fn sync(&mut self, params: &[Named]) -> Result<SyncReport, WorkerError> {
        let header = FrameHeader {
            worker_id: self.options.worker_id.clone(),
            fragment_id: None,
            fmt: PayloadFormat::Safetensors,
            round: Some(self.round),
        };
        let frame = Bytes::from(pseudo_gradient_frame(
            &header,
            &self.snapshot,
            params,
            self.upload_dtype,
        )?);
        let upload_bytes = frame.len();
        let deadline = Instant::now() + self.options.reconnect_budget;
        let mut attempt = 0;
        loop {
            if self.forgotten.swap(false, Ordering::Relaxed) {
                // The coordinator restarted without us (or evicted us): register again.
                let restart = self.register_again().await?;
                if restart.round != self.round {
                    return self.adopt(restart, params, upload_bytes);
                }
            }
            match self.client.submit(frame.clone()).await {
                Ok(next) => {
                    self.load(&next, params)?;
                    self.steps_since_sync.store(0, Ordering::Relaxed);
                    return Ok(SyncReport {
                        round: self.round,
                        contributed: true,
                        upload_bytes,
                    });
                }
                Err(e) if e.is(ErrorKind::UnknownWorker) => {
                    self.forgotten.store(true, Ordering::Relaxed)
                }
                Err(e) if e.is(ErrorKind::StaleRound) => {
                    let current = self
                        .client
                        .with_retries(|| self.client.global_params())
                        .await?;
                    return self.adopt(current, params, upload_bytes);
                }
                Err(e) if e.is(ErrorKind::DuplicateSubmission) => {
                    // An earlier attempt got in but its response was lost: wait for the round.
                    let next = self.await_round_after(self.round, deadline).await?;
                    self.load(&next, params)?;
                    return Ok(SyncReport {
                        round: self.round,
                        contributed: true,
                        upload_bytes,
                    });
                }
                Err(e) if e.is_transient() => {
                    if Instant::now() >= deadline {
                        return Err(WorkerError::GaveUp(self.options.reconnect_budget, e));
                    }
                    let delay = self.client.config().retry.delay(attempt);
                    warn!(worker_id = %self.options.worker_id, error = %e, ?delay, "submission failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn adopt(
        &mut self,
        blob: ParamsBlob,
        params: &[Named],
        upload_bytes: usize,
    ) -> Result<SyncReport, WorkerError> {
        warn!(
            worker_id = %self.options.worker_id,
            ours = self.round,
            coordinator = blob.round,
            "the coordinator is at another round; adopting its parameters and dropping this round's local steps"
        );
        self.load(&blob, params)?;
        self.steps_since_sync.store(0, Ordering::Relaxed);
        Ok(SyncReport {
            round: self.round,
            contributed: false,
            upload_bytes,
        })
    }

    async fn register_again(&self) -> Result<ParamsBlob, WorkerError> {
        let registration = RegisterRequest {
            worker_id: self.options.worker_id.clone(),
            hostname: self.options.hostname.clone(),
            param_shapes: Some(shapes(&self.snapshot)),
            ..RegisterRequest::default()
        };
        info!(worker_id = %self.options.worker_id, "registering again");
        Ok(self
            .client
            .with_retries(|| self.client.register(&registration))
            .await?)
    }

    async fn await_round_after(
        &self,
        round: u64,
        deadline: Instant,
    ) -> Result<ParamsBlob, WorkerError> {
        loop {
            match self.client.global_params().await {
                Ok(blob) if blob.round > round => return Ok(blob),
                Ok(_) => {}
                Err(e) if e.is_transient() && Instant::now() < deadline => {}
                Err(e) => return Err(e.into()),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Leaves the run (deregisters).
    pub async fn leave(self) -> Result<(), WorkerError> {
        self.heartbeat.abort();
        self.client.deregister(&self.options.worker_id).await?;
        Ok(())
    }
}

/// What the heartbeat task shares with the worker.
struct Beat {
    /// Set when the coordinator no longer knows the worker (it must register again).
    forgotten: Arc<AtomicBool>,
    /// Inner steps so far, for the rate.
    steps: Arc<std::sync::atomic::AtomicU64>,
    /// Where relayed commands go.
    commands: Arc<Mutex<CommandInbox>>,
}

async fn heartbeat_loop(
    client: Arc<CoordinatorClient>,
    worker_id: String,
    every: Duration,
    beat: Beat,
) {
    let mut interval = tokio::time::interval(every);
    let mut last = (Instant::now(), 0u64);
    loop {
        interval.tick().await;
        let now = (Instant::now(), beat.steps.load(Ordering::Relaxed));
        let elapsed = now.0.duration_since(last.0).as_secs_f64();
        let rate = (now.1 >= last.1 && elapsed > 0.0).then(|| (now.1 - last.1) as f64 / elapsed);
        last = now;
        let command_ack = beat
            .commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ack();
        let heartbeat = HeartbeatRequest {
            worker_id: worker_id.clone(),
            steps_per_second: rate,
            stats: None,
            command_ack: Some(command_ack),
            sync_state: None,
        };
        match client.heartbeat(&heartbeat).await {
            Ok(reply) => {
                let mut commands = beat.commands.lock().unwrap_or_else(PoisonError::into_inner);
                if commands.receive(&reply) {
                    info!(worker_id = %worker_id, command = ?reply.command, "the coordinator relayed a command");
                }
            }
            Err(e) if e.is(ErrorKind::UnknownWorker) => {
                beat.forgotten.store(true, Ordering::Relaxed)
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
        }
    }
}
