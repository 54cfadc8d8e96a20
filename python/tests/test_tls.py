"""TLS: a worker with the operator's CA bundle and a token, and one authenticated by its client
certificate alone (mTLS, a named client's bundle without a token, listed in the coordinator's
clients file), train together over HTTPS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diloco import ConfigurationError, Credentials, DiLoCoWorker
from harness import Processes, credentials_dir, events, fresh_token, token_dir
from pki import TestCa
from student_task import student

ROUNDS = 3


def test_workers_train_over_tls_with_a_token_or_a_client_certificate(
    processes: Processes, tmp_path: Path
) -> None:
    ca = TestCa(tmp_path / "pki")
    server = ca.server()
    client = ca.client("worker-b")
    token = fresh_token("tls")
    tokens = token_dir(tmp_path / "tokens", token)
    clients = tmp_path / "clients.json"
    clients.write_text(json.dumps({"clients": [{"name": "worker-b", "role": "worker"}]}))
    coordinator = processes.coordinator(
        "training: {min_workers: 2, sync_every: 10, heartbeat_timeout_seconds: 20}\n"
        f"auth: {{token_dir: {tokens}, clients_file: {clients}}}\n"
        f"tls: {{cert: {server.cert}, key: {server.key}, client_ca: {ca.cert}}}\n"
        "audit: {path: audit.jsonl}\n"
    )
    assert coordinator.url.startswith("https://127.0.0.1:")
    with_token = credentials_dir(tmp_path / "a", coordinator.url, token=token, ca=ca.cert)
    with_cert = credentials_dir(
        tmp_path / "b", coordinator.url, ca=ca.cert, client_cert=client.cert, client_key=client.key
    )
    assert not (with_cert / "token").exists()
    assert not Credentials.from_dir(with_cert).has_token
    workers = [
        processes.python_worker(
            "a",
            ["--seed", "0", "--rounds", str(ROUNDS)],
            {"DILOCO_CREDENTIALS_DIR": str(with_token)},
        ),
        # A certificate acts only for worker ids under its common name.
        processes.python_worker(
            "worker-b",
            ["--seed", "1", "--rounds", str(ROUNDS)],
            {"DILOCO_CREDENTIALS_DIR": str(with_cert)},
        ),
    ]
    outputs = [w.finish(180) for w in workers]
    for lines in outputs:
        rounds = events(lines, "round")
        assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
        assert all(r["contributed"] for r in rounds)
        assert rounds[-1]["eval_loss"] < events(lines, "joined")[0]["eval_loss"]
    for a, b in zip(events(outputs[0], "round"), events(outputs[1], "round")):
        assert a["params_sha256"] == b["params_sha256"]

    # worker-b never had a token: the coordinator knew it by its certificate.
    registrations = {r["worker_id"]: r for r in coordinator.audit() if r["event"] == "register"}
    assert registrations["worker-b"]["caller"] == "cert:worker-b", registrations["worker-b"]
    assert registrations["a"]["caller"] == "worker-token", registrations["a"]


def test_a_coordinator_certificate_from_another_ca_is_a_configuration_error(
    processes: Processes, tmp_path: Path
) -> None:
    ca, stranger = TestCa(tmp_path / "pki"), TestCa(tmp_path / "other", "another CA")
    server = ca.server()
    coordinator = processes.coordinator(f"tls: {{cert: {server.cert}, key: {server.key}}}\n")
    credentials = Credentials(url=coordinator.url, ca_file=stranger.cert)
    with pytest.raises(ConfigurationError, match="cannot verify the TLS certificate"):
        DiLoCoWorker(student(), worker_id="w", credentials=credentials, reconnect_budget=5)
