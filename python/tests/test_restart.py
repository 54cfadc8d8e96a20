"""A coordinator killed mid-run comes back from its checkpoint and the Python workers carry on:
they reconnect with backoff, resubmit when the round is unchanged, and adopt the coordinator's
parameters when it came back at an earlier round."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import List, Tuple

from harness import Coordinator, Process, Processes, credentials_dir, events

RESTART_CONFIG = (
    "training: {min_workers: 2, sync_every: 20, heartbeat_timeout_seconds: 30}\n"
    "checkpoint: {dir: checkpoints, every_rounds: 1}\n"
)


def train_then_kill(
    processes: Processes, tmp_path: Path, rounds: int
) -> Tuple[Coordinator, List[Process], int]:
    """Two workers train; after round 3 they are held (SIGSTOP) and, once the current round's
    checkpoint is on disk, the coordinator is killed (SIGKILL). Returns the dead coordinator,
    the held workers and the round it died at."""
    coordinator = processes.coordinator(RESTART_CONFIG)
    env = {"DILOCO_CREDENTIALS_DIR": str(credentials_dir(tmp_path / "creds", coordinator.url))}
    workers = [
        # 0.4 s a round: they are still mid-run when held.
        processes.python_worker(
            w, ["--seed", str(i), "--rounds", str(rounds), "--step-delay", "0.02"], env
        )
        for i, w in enumerate(["a", "b"])
    ]
    coordinator.wait_until(lambda s: s["sync_round"] >= 3, timeout=120, what="round 3")
    for worker in workers:
        os.kill(worker.pid, signal.SIGSTOP)
    status = coordinator.wait_until(
        lambda s: s.get("last_checkpoint_round") == s["sync_round"],
        timeout=30,
        what="the current round's checkpoint",
    )
    coordinator.process.kill()
    return coordinator, workers, status["sync_round"]


def restart(processes: Processes, dead: Coordinator) -> Coordinator:
    """The coordinator again, in the same directory and on the same address."""
    address = dead.url.split("://", 1)[1]
    return processes.coordinator(f"listen: {address}\n{RESTART_CONFIG}")


def resume(workers: List[Process]) -> None:
    for worker in workers:
        os.kill(worker.pid, signal.SIGCONT)


def test_workers_reconnect_to_a_restarted_coordinator_and_finish(
    processes: Processes, tmp_path: Path
) -> None:
    dead, workers, killed_at = train_then_kill(processes, tmp_path, rounds=7)
    # The workers find nobody for a while: they must back off and retry, not fail.
    resume(workers)
    time.sleep(2.0)
    restarted = restart(processes, dead)
    assert restarted.url == dead.url
    assert restarted.status()["sync_round"] == killed_at, "resumed at the checkpoint's round"
    for worker in workers:
        rounds = events(worker.finish(180), "round")
        assert len(rounds) == 7, rounds
        assert all(r["contributed"] for r in rounds), rounds
        assert "retrying in" in worker.stderr(), "it met the outage and backed off"
    assert restarted.status()["sync_round"] == 7


def test_workers_ahead_of_a_lagging_checkpoint_adopt_it_and_finish(
    processes: Processes, tmp_path: Path
) -> None:
    dead, workers, killed_at = train_then_kill(processes, tmp_path, rounds=6)
    # The crash came before the newest checkpoint reached the disk: the coordinator comes back
    # one round behind the workers.
    (dead.dir / "checkpoints" / f"checkpoint-{killed_at:010}.safetensors").unlink()
    restarted = restart(processes, dead)
    assert restarted.status()["sync_round"] == killed_at - 1
    resume(workers)
    for worker in workers:
        rounds = events(worker.finish(180), "round")
        assert len(rounds) == 6, rounds
        # The pseudo-gradient of round `killed_at` is refused as stale: the worker adopts the
        # coordinator's parameters once (contributing nothing) and trains on.
        adopted = [r for r in rounds if not r["contributed"]]
        assert [r["round"] for r in adopted] == [killed_at - 1], rounds
    # 6 iterations, one of them the adoption, and one round lost with the checkpoint.
    assert restarted.status()["sync_round"] == 4
