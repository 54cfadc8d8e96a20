"""Tokens: a rotation on disk mid-training costs no step; a wrong token is a clear error that
never shows the token."""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import pytest

from diloco import AuthenticationError, Credentials, DiLoCoWorker
from harness import Processes, credentials_dir, events, fresh_token, token_dir, write_atomically
from student_task import student

ROUNDS = 10


def test_a_token_rotated_on_disk_during_training_costs_no_step(
    processes: Processes, tmp_path: Path
) -> None:
    old, new = fresh_token("before"), fresh_token("after")
    tokens = token_dir(tmp_path / "tokens", old)
    coordinator = processes.coordinator(
        f"training: {{min_workers: 2, sync_every: 10, heartbeat_timeout_seconds: 20}}\n"
        f"auth: {{token_dir: {tokens}}}\naudit: {{path: audit.jsonl}}\n"
    )
    creds = credentials_dir(tmp_path / "creds", coordinator.url, token=old)
    env = {"DILOCO_CREDENTIALS_DIR": str(creds)}
    workers = [
        processes.python_worker(
            w, ["--seed", str(i), "--rounds", str(ROUNDS), "--step-delay", "0.03"], env
        )
        for i, w in enumerate(["a", "b"])
    ]
    coordinator.wait_until(lambda s: s["sync_round"] >= 2, timeout=120, token=old, what="round 2")

    # The workers' Secret changes first, then the coordinator's, without a grace period: the old
    # token stops working at once, and the workers' next requests get 401.
    write_atomically(creds / "token", new)
    write_atomically(tokens / "token", new)
    deadline = time.monotonic() + 10
    while coordinator.get("/status", old).status_code != 401:
        assert time.monotonic() < deadline, "the coordinator did not reload its token"
        time.sleep(0.05)
    assert coordinator.status(new)["sync_round"] < ROUNDS, "the rotation happened mid-training"

    for worker in workers:
        lines = worker.finish(180)
        rounds = events(lines, "round")
        assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1)), rounds
        assert all(r["contributed"] for r in rounds), rounds
        # The 401 was met, the file re-read once, and the request retried with the new token.
        assert events(lines, "done")[0]["token_reloads"] == 1, lines
    assert coordinator.metrics(new)["diloco_auth_failures_total"] >= 2
    reloads = [r for r in coordinator.audit() if r["event"] == "credential_reload"]
    assert reloads, "the coordinator reloaded the token"
    audit_text = (coordinator.dir / "audit.jsonl").read_text()
    assert old not in audit_text and new not in audit_text


@pytest.mark.parametrize("source", ["literal", "file"])
def test_a_wrong_token_raises_a_clear_error_without_the_token(
    processes: Processes, tmp_path: Path, source: str
) -> None:
    right, wrong = fresh_token("right"), fresh_token("wrong")
    tokens = token_dir(tmp_path / "tokens", right)
    coordinator = processes.coordinator(f"auth: {{token_dir: {tokens}}}\n")
    if source == "literal":
        credentials = Credentials.with_token(coordinator.url, wrong)
    else:
        credentials = Credentials.from_dir(
            credentials_dir(tmp_path / "creds", coordinator.url, token=wrong)
        )
    assert wrong not in repr(credentials)

    with pytest.raises(AuthenticationError) as caught:
        DiLoCoWorker(student(), worker_id="w", credentials=credentials, reconnect_budget=10)
    error = caught.value
    assert error.status == 401
    assert "refused our credentials" in str(error)
    assert "invalid or expired bearer token" in str(error)
    if source == "file":
        assert str(tmp_path / "creds" / "token") in str(error), "it names the file to check"
    text = "\n".join(
        [
            str(error),
            repr(error),
            *traceback.format_exception(type(error), error, error.__traceback__),
        ]
    )
    for secret in (wrong, right):
        assert secret not in text
    # Not chained to the HTTP library's exception (its request carries the Authorization header).
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__

    # Nothing was registered; the coordinator is still fine for the right token.
    assert coordinator.status(right)["workers"] == {}


def test_credentials_never_show_a_literal_token() -> None:
    secret = fresh_token("literal")
    credentials = Credentials.with_token("http://127.0.0.1:1", secret)
    assert secret not in repr(credentials) and secret not in str(credentials)
    assert "token=<redacted>" in repr(credentials)
    assert credentials.read_token() == secret
