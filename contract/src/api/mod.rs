//! The coordinator's HTTP API: forgather's endpoint paths, headers and JSON bodies, plus ours.
//!
//! Two listeners serve it: the control plane (everything but the bulk paths when a bulk plane
//! exists) and the bulk plane ([`BULK_PATHS`] and [`HEALTH`]). On the control plane a bulk path
//! answers 404 with the bulk plane's URL in [`BULK_URL_HEADER`] and [`ErrorBody::bulk_url`].

pub mod audit;
pub mod control;
pub mod errors;
pub mod stats;
pub mod status;
pub mod work;
pub mod workers;

pub use audit::{AUDIT, AuditTail, DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT};
pub use control::{
    CommandQueued, CommandRequest, ControlAction, ControlReply, ControlRequest, NumWorkersUpdated,
    OptimizerUpdated, SavedState, ShuttingDown, TokenBudgetUpdated, UpdateNumWorkersRequest,
    UpdateOptimizerRequest, UpdateTokenBudgetRequest, WorkerKicked,
};
pub use errors::{AuthRefusalBody, ErrorBody, ErrorKind};
pub use stats::{STATS_HISTORY, StatsHistoryReply, StatsRecord};
pub use status::{
    AggregateStats, ExpectedClientSettings, InfoOuterOptimizer, InfoReply, KnownWorker,
    KnownWorkersReply, StatusReply, TokenProgress, WorkerStatus,
};
pub use work::{
    DATASETS_REGISTER, DatasetHint, DatasetRegisterReply, DatasetRegisterRequest, WORK_COMPLETE,
    WORK_QUEUE, WORK_QUEUES, WORK_REQUEST, WorkCompleteReply, WorkCompleteRequest, WorkQueueDetail,
    WorkQueueSummary, WorkRequest, WorkRequestReply, WorkerUnits,
};
pub use workers::{
    HeartbeatReply, HeartbeatRequest, OkReply, RegisterRequest, RelayedCommand, ReplyStatus,
    WorkerRef, valid_worker_id,
};

/// Liveness; open on every listener (`{"status": "ok"}`).
pub const HEALTH: &str = "/health";
/// Join the run; answers with the parameters to start from (tensor response).
pub const REGISTER: &str = "/register";
/// Keep-alive with statistics; its reply may relay a command.
pub const HEARTBEAT: &str = "/heartbeat";
/// Leave the run.
pub const DEREGISTER: &str = "/deregister";
/// The round, the roster and the settings ([`StatusReply`]).
pub const STATUS: &str = "/status";
/// What workers must adopt ([`InfoReply`]).
pub const INFO: &str = "/info";
/// Every worker ever registered ([`KnownWorkersReply`]).
pub const KNOWN_WORKERS: &str = "/known_workers";
/// Prometheus metrics (OpenMetrics text).
pub const METRICS: &str = "/metrics";
/// The model definition bundle: a deterministic tar of the definition directory.
pub const MODEL_DEF: &str = "/model_def";
/// On `/model_def`: the model hash (equal to `/info.model_hash`) a worker checks the bundle
/// against before it builds the model.
pub const MODEL_HASH_HEADER: &str = "x-forgather-model-hash";
/// `/model_def`'s media type.
pub const TAR_CONTENT_TYPE: &str = "application/x-tar";
/// The first worker's parameters, when the coordinator has none (a submit frame).
pub const INIT_PARAMS: &str = "/init_params";
/// A pseudo-gradient (a submit frame); answers with the next round's parameters.
pub const SUBMIT_PSEUDOGRAD: &str = "/submit_pseudograd";
/// A fragment's pseudo-gradient (streaming DiLoCo; refused: not implemented).
pub const SUBMIT_FRAGMENT_PSEUDOGRAD: &str = "/submit_fragment_pseudograd";
/// The current parameters (tensor response).
pub const GLOBAL_PARAMS: &str = "/global_params";
/// Control actions are `POST /control/<action>` ([`ControlAction::path`]); admin only.
pub const CONTROL_PREFIX: &str = "/control/";

/// The bulk plane's paths (tensor uploads and downloads), as in forgather.
pub const BULK_PATHS: [&str; 3] = [SUBMIT_PSEUDOGRAD, SUBMIT_FRAGMENT_PSEUDOGRAD, GLOBAL_PARAMS];

/// Paths whose response body is safetensors bytes ([`TENSOR_CONTENT_TYPE`], with
/// [`ROUND_HEADER`]) instead of JSON.
pub const TENSOR_RESPONSE_PATHS: [&str; 4] =
    [REGISTER, GLOBAL_PARAMS, SUBMIT_PSEUDOGRAD, INIT_PARAMS];

/// Header carrying the round of the parameters in a tensor response.
pub const ROUND_HEADER: &str = "x-diloco-round";
/// Header advertising the bulk plane's URL (on `/register`, and on a bulk path's 404 on the
/// control plane), as in forgather.
pub const BULK_URL_HEADER: &str = "x-forgather-bulk-url";
/// The realm of the 401 challenge, also in its body ([`AuthRefusalBody::realm`]).
pub const AUTH_REALM: &str = "diloco";
/// The challenge of a 401 (`WWW-Authenticate`); its realm is [`AUTH_REALM`].
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"diloco\"";
/// The scheme of `Authorization` (compared without regard to case, as RFC 9110 and forgather
/// do).
pub const BEARER_SCHEME: &str = "Bearer";
/// Content type of tensor requests and responses.
pub const TENSOR_CONTENT_TYPE: &str = "application/octet-stream";
/// `/info`'s default `wire_format` (`training.wire_format` may announce `pickle` instead), and
/// the codec our SDKs ask for.
pub const WIRE_FORMAT: &str = "safetensors";
/// Query parameter of `/register`, `/submit_*` and `/global_params` naming the codec of the
/// tensor response (`safetensors` or `pickle`); without it the response uses `/info`'s
/// `wire_format`. Our SDKs always send it, so they work whatever the server announces.
pub const WIRE_FORMAT_QUERY: &str = "wire_format";

#[cfg(test)]
mod tests {
    use super::*;

    /// The challenge names the realm the 401 body carries.
    #[test]
    fn the_challenge_and_the_body_name_one_realm() {
        assert_eq!(
            BEARER_CHALLENGE,
            format!("{BEARER_SCHEME} realm=\"{AUTH_REALM}\"")
        );
    }
}
