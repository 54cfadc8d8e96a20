//! Every name of the contract as one JSON document, for clients written in other languages:
//! the Python SDK's tests run `diloco-contract constants` and compare it with their own
//! constants, so a renamed path, header, file, variable or body field fails them.
//!
//! Body field names are read from the types themselves (a sample with every optional field
//! set, serialized), so renaming a field here changes the document without anyone
//! remembering to.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::api::{self, ControlAction, ErrorKind, RelayedCommand};
use crate::clients::{self, ClientEntry, ClientsFile, Role};
use crate::config::TrainingMode;
use crate::credentials::{self, Endpoints};
use crate::env;
use crate::wire::dtype::WireDtype;

/// The document.
pub fn document() -> Value {
    json!({
        "paths": {
            "health": api::HEALTH,
            "register": api::REGISTER,
            "heartbeat": api::HEARTBEAT,
            "deregister": api::DEREGISTER,
            "status": api::STATUS,
            "info": api::INFO,
            "known_workers": api::KNOWN_WORKERS,
            "metrics": api::METRICS,
            "model_def": api::MODEL_DEF,
            "init_params": api::INIT_PARAMS,
            "submit_pseudograd": api::SUBMIT_PSEUDOGRAD,
            "submit_fragment_pseudograd": api::SUBMIT_FRAGMENT_PSEUDOGRAD,
            "global_params": api::GLOBAL_PARAMS,
            "stats_history": api::STATS_HISTORY,
            "datasets_register": api::DATASETS_REGISTER,
            "work_request": api::WORK_REQUEST,
            "work_complete": api::WORK_COMPLETE,
            "work_queues": api::WORK_QUEUES,
            "work_queue": api::WORK_QUEUE,
        },
        "bulk_paths": api::BULK_PATHS,
        "tensor_response_paths": api::TENSOR_RESPONSE_PATHS,
        "control_actions": ControlAction::ALL
            .into_iter()
            .map(|a| (a.name().to_string(), Value::String(a.path())))
            .collect::<Map<_, _>>(),
        "headers": {
            "round": api::ROUND_HEADER,
            "bulk_url": api::BULK_URL_HEADER,
            "bearer_challenge": api::BEARER_CHALLENGE,
            "model_hash": api::MODEL_HASH_HEADER,
        },
        "tensor_content_type": api::TENSOR_CONTENT_TYPE,
        "wire_format": api::WIRE_FORMAT,
        "wire_format_query": api::WIRE_FORMAT_QUERY,
        "credential_files": {
            "token": credentials::TOKEN,
            "previous_token": credentials::PREVIOUS_TOKEN,
            "previous_valid_until": credentials::PREVIOUS_VALID_UNTIL,
            "tls_cert": credentials::TLS_CERT,
            "tls_key": credentials::TLS_KEY,
            "ca_cert": credentials::CA_CERT,
            "endpoints": credentials::ENDPOINTS,
        },
        "clients_file": clients::CLIENTS_FILE,
        "env": {
            "url": env::URL,
            "credentials_dir": env::CREDENTIALS_DIR,
            "token_file": env::TOKEN_FILE,
            "token": env::TOKEN,
            "ca_file": env::CA_FILE,
            "client_cert": env::CLIENT_CERT,
            "client_key": env::CLIENT_KEY,
            "worker_id": env::WORKER_ID,
        },
        "relayed_commands": RelayedCommand::ALL.map(RelayedCommand::as_str),
        "error_kinds": ErrorKind::ALL.map(ErrorKind::as_str),
        "roles": [Role::Admin.as_str(), Role::Worker.as_str()],
        "wire_dtypes": [WireDtype::Bf16.as_str(), WireDtype::Fp32.as_str()],
        "fields": fields(),
    })
}

/// The JSON field names of each body, from samples with every optional field present.
fn fields() -> Value {
    let full = samples::full();
    json!({
        "endpoints": names(&full.endpoints),
        "error_body": names(&full.error),
        "register_request": names(&full.register),
        "heartbeat_request": names(&full.heartbeat),
        "heartbeat_reply": names(&full.heartbeat_reply),
        "worker_ref": names(&full.worker_ref),
        "command_request": names(&full.command),
        "info_reply": names(&full.info),
        "expected_client_settings": names(&full.info.expected_client_settings),
        "status_reply": names(&full.status),
        "worker_status": names(&full.worker_status),
        "clients_file": names(&full.clients),
        "client_entry": names(&full.clients.clients[0]),
    })
}

/// The field names `value` serializes with, sorted.
fn names(value: &impl Serialize) -> Vec<String> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

/// One value of each body with every optional field set.
mod samples {
    use std::collections::BTreeMap;

    use super::*;
    use crate::api::*;

    pub struct Full {
        pub endpoints: Endpoints,
        pub error: ErrorBody,
        pub register: RegisterRequest,
        pub heartbeat: HeartbeatRequest,
        pub heartbeat_reply: HeartbeatReply,
        pub worker_ref: WorkerRef,
        pub command: CommandRequest,
        pub info: InfoReply,
        pub status: StatusReply,
        pub worker_status: WorkerStatus,
        pub clients: ClientsFile,
    }

    pub fn full() -> Full {
        let text = || Some(String::new());
        let worker_status = WorkerStatus {
            hostname: text(),
            registered_at: String::new(),
            last_heartbeat: String::new(),
            sync_round: 0,
            last_sync_server_round: Some(0),
            steps_per_second: Some(0.0),
            output_dir: text(),
            stats: BTreeMap::new(),
            sync_state: BTreeMap::new(),
            restored: false,
        };
        Full {
            endpoints: Endpoints {
                control: String::new(),
                bulk: text(),
            },
            error: ErrorBody {
                error: String::new(),
                kind: text(),
                bulk_url: text(),
            },
            register: RegisterRequest {
                worker_id: String::new(),
                hostname: text(),
                output_dir: text(),
                extra: Some(Value::Null),
                param_shapes: Some(BTreeMap::new()),
                group: Some(Value::Null),
            },
            heartbeat: HeartbeatRequest {
                worker_id: String::new(),
                steps_per_second: Some(0.0),
                stats: Some(Value::Null),
                command_ack: Some(0),
                sync_state: Some(Value::Null),
            },
            heartbeat_reply: HeartbeatReply {
                status: ReplyStatus::Ok,
                sync_round: 0,
                num_workers: 0,
                num_registered: 0,
                command: Some(RelayedCommand::Abort),
                command_id: Some(0),
            },
            worker_ref: WorkerRef::default(),
            command: CommandRequest {
                command: RelayedCommand::Abort,
                worker_id: text(),
            },
            info: InfoReply {
                output_dir: None,
                model_checkpoint_dir: None,
                outer_optimizer: InfoOuterOptimizer::default(),
                mode: TrainingMode::Sync,
                async_mode: false,
                num_workers: 0,
                num_parameters: 0,
                model_size_mb: 0.0,
                model_hash: None,
                parameters_initialized: false,
                sync_round: 0,
                shm_group_dir: None,
                shm_group_size: None,
                dylu_enabled: false,
                dylu_base_sync_every: None,
                grace_period: 0.0,
                settings_authority: String::new(),
                expected_client_settings: ExpectedClientSettings {
                    sync_every: 0,
                    dylu: false,
                    verbose_sync: false,
                    upload_dtype: WireDtype::Bf16,
                    upload_sr: false,
                    download_dtype: WireDtype::Fp32,
                    download_sr: false,
                    wire_format: String::new(),
                    backend: String::new(),
                    bf16_comm: false,
                    num_fragments_min: 0,
                    num_fragments_default: 0,
                    fragment_assignment_default: String::new(),
                    heartbeat_timeout: 0,
                },
                transport: String::new(),
                grpc_endpoint: None,
            },
            status: StatusReply {
                status: Default::default(),
                mode: TrainingMode::Sync,
                sync_round: 0,
                num_workers: 0,
                num_registered: 0,
                workers: BTreeMap::new(),
                pending_submissions: Vec::new(),
                waiting_for: Vec::new(),
                receiving: Vec::new(),
                started_at: String::new(),
                uptime_seconds: 0.0,
                heartbeat_timeout: 0,
                sync_timeout: 0,
                min_workers: 0,
                outer_lr: 0.0,
                outer_momentum: 0.0,
                outer_optimizer: String::new(),
                save_dir: None,
                last_checkpoint_round: None,
                parameters_initialized: false,
                model_params: 0,
                model_size_mb: 0.0,
                last_outer_step_seconds: None,
                last_publish_seconds: None,
                device: String::new(),
                aggregate_stats: AggregateStats::default(),
                token_progress: Some(TokenProgress::default()),
                total_worker_deaths: Some(0),
            },
            worker_status,
            clients: ClientsFile {
                clients: vec![ClientEntry {
                    name: String::new(),
                    role: Role::Worker,
                }],
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document names what the Python SDK relies on, with the values the coordinator
    /// serves (a spot check; the Python tests compare all of it).
    #[test]
    fn the_document_names_paths_files_and_body_fields() {
        let doc = document();
        assert_eq!(doc["paths"]["heartbeat"], "/heartbeat");
        assert_eq!(doc["control_actions"]["command"], "/control/command");
        assert_eq!(doc["credential_files"]["endpoints"], "endpoints.json");
        assert_eq!(doc["fields"]["endpoints"], json!(["bulk", "control"]));
        assert_eq!(
            doc["fields"]["error_body"],
            json!(["bulk_url", "error", "kind"])
        );
        assert_eq!(
            doc["fields"]["heartbeat_request"],
            json!([
                "command_ack",
                "stats",
                "steps_per_second",
                "sync_state",
                "worker_id"
            ])
        );
        assert_eq!(
            doc["relayed_commands"],
            json!(["save_checkpoint", "save_and_stop", "abort"])
        );
    }
}
