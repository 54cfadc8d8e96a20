"""Every name the SDK shares with the coordinator, the operator and the Rust client: paths,
headers, the files of a mounted credential, environment variables, relayed commands, error
kinds and the JSON fields the SDK sends or reads.

They are defined once, in the Rust ``diloco-contract`` crate; ``tests/test_contract.py``
compares this module with what ``diloco-contract constants`` prints, so a name changed on
one side fails the tests instead of a run.
"""

from __future__ import annotations

# -- paths -------------------------------------------------------------------------------

HEALTH = "/health"
REGISTER = "/register"
HEARTBEAT = "/heartbeat"
DEREGISTER = "/deregister"
STATUS = "/status"
INFO = "/info"
INIT_PARAMS = "/init_params"
SUBMIT_PSEUDOGRAD = "/submit_pseudograd"
GLOBAL_PARAMS = "/global_params"

#: The paths this SDK calls, by their name in the contract.
PATHS = {
    "health": HEALTH,
    "register": REGISTER,
    "heartbeat": HEARTBEAT,
    "deregister": DEREGISTER,
    "status": STATUS,
    "info": INFO,
    "init_params": INIT_PARAMS,
    "submit_pseudograd": SUBMIT_PSEUDOGRAD,
    "global_params": GLOBAL_PARAMS,
}

#: Paths whose request or response carries tensors.
TENSOR_PATHS = frozenset({REGISTER, GLOBAL_PARAMS, SUBMIT_PSEUDOGRAD, INIT_PARAMS})

# -- headers -----------------------------------------------------------------------------

#: Header carrying the round of the parameters in a tensor response.
ROUND_HEADER = "x-diloco-round"
#: Header in which the coordinator advertises its bulk plane.
BULK_URL_HEADER = "x-forgather-bulk-url"
#: The tensor serialization this SDK sends (frame ``fmt``) and asks for in responses.
WIRE_FORMAT = "safetensors"
#: Query parameter naming the codec of a tensor response; the SDK always sends it, so it
#: works whichever codec ``/info``'s ``wire_format`` announces.
WIRE_FORMAT_QUERY = "wire_format"
#: Codecs a coordinator may announce.
WIRE_FORMATS = frozenset({"safetensors", "pickle"})

# -- credential files (keys of the operator's Secrets) -----------------------------------

TOKEN_KEY = "token"
CA_CERT_KEY = "ca.crt"
CLIENT_CERT_KEY = "tls.crt"
CLIENT_KEY_KEY = "tls.key"
ENDPOINTS_KEY = "endpoints.json"

# -- environment variables ---------------------------------------------------------------

ENV_URL = "DILOCO_URL"
ENV_CREDENTIALS_DIR = "DILOCO_CREDENTIALS_DIR"
ENV_TOKEN_FILE = "DILOCO_TOKEN_FILE"
ENV_TOKEN = "DILOCO_TOKEN"
ENV_CA_FILE = "DILOCO_CA_FILE"
ENV_CLIENT_CERT = "DILOCO_CLIENT_CERT"
ENV_CLIENT_KEY = "DILOCO_CLIENT_KEY"
ENV_WORKER_ID = "DILOCO_WORKER_ID"

# -- relayed commands and error kinds ----------------------------------------------------

SAVE_CHECKPOINT = "save_checkpoint"
SAVE_AND_STOP = "save_and_stop"
ABORT = "abort"
#: What ``/control/command`` may relay to workers.
RELAYED_COMMANDS = (SAVE_CHECKPOINT, SAVE_AND_STOP, ABORT)

UNKNOWN_WORKER = "unknown_worker"
STALE_ROUND = "stale_round"
DUPLICATE_SUBMISSION = "duplicate_submission"
ALREADY_INITIALIZED = "already_initialized"
SLICE_MISMATCH = "slice_mismatch"
NOT_FINITE = "not_finite"
#: The error kinds the SDK acts on.
ERROR_KINDS = (
    UNKNOWN_WORKER,
    STALE_ROUND,
    DUPLICATE_SUBMISSION,
    ALREADY_INITIALIZED,
    SLICE_MISMATCH,
    NOT_FINITE,
)

# -- JSON fields the SDK sends or reads, by body -----------------------------------------

FIELDS = {
    "register_request": ("worker_id", "hostname", "param_shapes"),
    "heartbeat_request": ("worker_id", "steps_per_second", "stats", "command_ack", "sync_state"),
    "heartbeat_reply": ("command", "command_id"),
    "worker_ref": ("worker_id",),
    "error_body": ("error", "kind"),
    "endpoints": ("control", "bulk"),
    "info_reply": ("expected_client_settings", "parameters_initialized", "sync_round"),
    "expected_client_settings": (
        "wire_format",
        "sync_every",
        "upload_dtype",
        "download_dtype",
        "heartbeat_timeout",
    ),
}
