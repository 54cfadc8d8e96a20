//! Why the round engine refused or could not do something. Each variant is one rule; the HTTP
//! layer (`http::api_error`) decides the status code and error kind a client sees.

use std::time::Duration;

use super::work_units::WorkError;
use crate::identity::Forbidden;

/// A refusal or failure of the round engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The worker id is not registered (never was, or was evicted).
    #[error(
        "unknown worker {0}: register first (it may have been evicted after missing heartbeats)"
    )]
    UnknownWorker(String),
    /// The caller may not do this for this worker.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// The request is malformed or asks for something unsupported.
    #[error("{0}")]
    BadRequest(String),
    /// No parameters yet.
    #[error(
        "the coordinator has no parameters yet: POST the initial parameters to /init_params \
         (or configure model.initial_parameters)"
    )]
    Uninitialized,
    /// `/init_params` after the model was defined.
    #[error("the coordinator already has parameters; GET /global_params")]
    AlreadyInitialized,
    /// A live registration already has this id.
    #[error(
        "worker {worker_id} is already registered; if it restarted, wait for the heartbeat \
         timeout ({heartbeat_timeout_seconds}s) to evict the old registration or POST \
         /deregister first"
    )]
    AlreadyRegistered {
        worker_id: String,
        heartbeat_timeout_seconds: u64,
    },
    /// `limits.max_workers` reached.
    #[error("the coordinator already has limits.max_workers={0} workers")]
    TooManyWorkers(usize),
    /// `param_shapes` do not match the model.
    #[error("param_shapes do not match the coordinator's model: {0}")]
    SliceMismatch(String),
    /// A pseudo-gradient computed from another round's parameters.
    #[error(
        "this pseudo-gradient was computed from round {theirs}, the coordinator is at round \
         {ours}; GET /global_params and train from there"
    )]
    StaleRound { theirs: u64, ours: u64 },
    /// A second upload in a round the worker already contributed to, refused before reading it.
    #[error("worker {worker_id} already submitted in round {round}; wait for the round to close")]
    AlreadySubmitted { worker_id: String, round: u64 },
    /// A second upload while the first is still arriving.
    #[error("an upload from worker {0} is already in progress")]
    UploadInProgress(String),
    /// A complete upload whose worker contributed meanwhile (it lost a race with itself).
    #[error("worker {worker_id} already submitted in round {round}")]
    AlreadyFolded { worker_id: String, round: u64 },
    /// The upload's worker left, or its round ended, while it arrived.
    #[error("worker {worker_id} left or round {round} ended while its upload was arriving")]
    UploadOrphaned { worker_id: String, round: u64 },
    /// The round did not close while a submitter waited.
    #[error(
        "Sync timeout: round {round} did not close within {}s; your upload stays counted",
        waited.as_secs()
    )]
    RoundTimeout { round: u64, waited: Duration },
    /// The new parameters were not encoded in time.
    #[error("the new parameters were not published in time")]
    PublishTimeout,
    /// A shutdown released the waiting request.
    #[error("the coordinator is shutting down; retry after it restarts")]
    ShuttingDown,
    /// The engine's state went away under a waiting request.
    #[error("the coordinator is shutting down")]
    Stopped,
    /// `/control/save_state` wrote nothing.
    #[error(
        "no checkpoint written: checkpoint.dir is not configured, the model is not initialized, \
         or the write failed (see logs)"
    )]
    NoCheckpoint,
    /// A work-unit request was refused.
    #[error(transparent)]
    Work(#[from] WorkError),
    /// The outer step itself failed (libtorch).
    #[error("the outer step failed: {0}")]
    OuterStep(#[source] tch::TchError),
}
