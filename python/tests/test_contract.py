"""The SDK speaks the contract the Rust side defines once (``diloco-contract``): its paths,
headers, credential files, environment variables, commands, error kinds and JSON fields are the
ones ``diloco-contract constants`` prints, and it acknowledges relayed commands the way the
coordinator expects."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Dict

import pytest
import torch
from harness import Processes, binary, clean_env

from diloco import protocol
from diloco.client import CoordinatorClient
from diloco.credentials import Credentials
from diloco.heartbeat import Heartbeat, StepCounter
from diloco.wire import WireDtype, encode_frame


@pytest.fixture(scope="module")
def contract() -> Dict[str, Any]:
    """What the Rust contract crate says."""
    done = subprocess.run(
        [str(binary("diloco-contract")), "constants"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_paths_and_headers_are_the_contract_s(contract: Dict[str, Any]) -> None:
    for name, path in protocol.PATHS.items():
        assert contract["paths"].get(name) == path, name
    assert sorted(protocol.TENSOR_PATHS) == sorted(contract["tensor_response_paths"])
    assert protocol.ROUND_HEADER == contract["headers"]["round"]
    assert protocol.BULK_URL_HEADER == contract["headers"]["bulk_url"]
    assert protocol.WIRE_FORMAT == contract["wire_format"]
    assert protocol.WIRE_FORMAT_QUERY == contract["wire_format_query"]


def test_credential_files_and_environment_are_the_contract_s(contract: Dict[str, Any]) -> None:
    files = contract["credential_files"]
    assert (
        protocol.TOKEN_KEY,
        protocol.CA_CERT_KEY,
        protocol.CLIENT_CERT_KEY,
        protocol.CLIENT_KEY_KEY,
        protocol.ENDPOINTS_KEY,
    ) == (files["token"], files["ca_cert"], files["tls_cert"], files["tls_key"], files["endpoints"])
    env = contract["env"]
    assert {
        "url": protocol.ENV_URL,
        "credentials_dir": protocol.ENV_CREDENTIALS_DIR,
        "token_file": protocol.ENV_TOKEN_FILE,
        "token": protocol.ENV_TOKEN,
        "ca_file": protocol.ENV_CA_FILE,
        "client_cert": protocol.ENV_CLIENT_CERT,
        "client_key": protocol.ENV_CLIENT_KEY,
        "worker_id": protocol.ENV_WORKER_ID,
    } == env


def test_commands_error_kinds_and_body_fields_are_the_contract_s(
    contract: Dict[str, Any],
) -> None:
    assert list(protocol.RELAYED_COMMANDS) == contract["relayed_commands"]
    unknown_kinds = set(protocol.ERROR_KINDS) - set(contract["error_kinds"])
    assert not unknown_kinds, f"kinds the coordinator never sends: {unknown_kinds}"
    # Every field the SDK sends or reads exists in that body of the contract.
    for body, fields in protocol.FIELDS.items():
        missing = set(fields) - set(contract["fields"][body])
        assert not missing, f"{body}: {sorted(missing)} not in the contract"


def test_a_relayed_command_comes_again_until_acknowledged_and_is_queued_once(
    processes: Processes,
) -> None:
    coordinator = processes.coordinator("training: {heartbeat_timeout_seconds: 30}\n")
    client = CoordinatorClient(Credentials(url=coordinator.url))
    client.init_params(encode_frame("w0", {"w": torch.zeros(2)}, WireDtype.FP32))
    client.register("w0", {"w": (2,)})
    queued = client.control("command", {"command": protocol.SAVE_AND_STOP, "worker_id": "w0"})
    assert queued["workers"] == ["w0"]

    heartbeat = Heartbeat(client, "w0", interval=60.0, steps=StepCounter())
    first = client.heartbeat("w0", command_ack=0)
    assert first["command"] == protocol.SAVE_AND_STOP and isinstance(first["command_id"], int)
    assert heartbeat.receive(first)
    # That reply is lost as far as the coordinator knows: the next beat still acknowledges 0.
    again = client.heartbeat("w0", command_ack=0)
    assert (again["command"], again["command_id"]) == (first["command"], first["command_id"])
    assert not heartbeat.receive(again), "the same command is queued once"
    acknowledged = client.heartbeat("w0", command_ack=first["command_id"])
    assert "command" not in acknowledged
    assert heartbeat.next_command() == protocol.SAVE_AND_STOP
    assert heartbeat.next_command() is None
    # sync_state (forgather's keys) is kept by whitelist, finite numbers only, per worker.
    client.heartbeat(
        "w0", sync_state={"sync_count": 2, "last_send_mb": 1.5, "secret": 7, "sync_every": "x"}
    )
    worker = client.status()["workers"]["w0"]
    assert worker["sync_state"] == {"sync_count": 2.0, "last_send_mb": 1.5}
    # Timestamps are RFC 3339 UTC ending in "Z" (forgather's end in "+00:00"): the same
    # instant to datetime.fromisoformat (Python 3.11 on).
    for stamp in (worker["registered_at"], worker["last_heartbeat"]):
        assert stamp.endswith("Z"), stamp
        assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0), stamp
    client.close()


def test_the_protocol_module_is_the_only_spelling_of_paths_in_the_sdk() -> None:
    source = Path(protocol.__file__).parent
    for module in source.glob("*.py"):
        if module.name == "protocol.py":
            continue
        text = module.read_text()
        for path in protocol.PATHS.values():
            assert f'"{path}"' not in text, f"{module.name} spells {path} itself"
