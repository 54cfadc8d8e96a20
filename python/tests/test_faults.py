"""A worker that dies mid-round does not stall the others beyond the heartbeat timeout."""

from __future__ import annotations

import time
from pathlib import Path

from harness import Processes, credentials_dir, events

HEARTBEAT_TIMEOUT = 3
# Survivors train long enough (0.5 s a round) for the victim to start, join and stall.
ROUNDS = 20
STEP_DELAY = "0.05"


def test_a_worker_killed_mid_round_is_evicted_and_the_others_finish_the_round(
    processes: Processes, tmp_path: Path
) -> None:
    coordinator = processes.coordinator(
        f"training: {{sync_every: 10, heartbeat_timeout_seconds: {HEARTBEAT_TIMEOUT}}}\n"
        "audit: {path: audit.jsonl}\n"
    )
    env = {"DILOCO_CREDENTIALS_DIR": str(credentials_dir(tmp_path / "creds", coordinator.url))}
    survivors = [
        processes.python_worker(
            w, ["--seed", str(i), "--rounds", str(ROUNDS), "--step-delay", STEP_DELAY], env
        )
        for i, w in enumerate(["a", "b"])
    ]
    coordinator.wait_until(
        lambda s: sorted(s["workers"]) == ["a", "b"], timeout=60, what="a and b to register"
    )
    # The victim joins after them, syncs once, then hangs in its inner loop (its heartbeat
    # thread still beats: a hung worker is not evicted while it is alive). By then all three
    # take part in every round.
    victim = processes.python_worker(
        "victim", ["--seed", "9", "--rounds", str(ROUNDS), "--stall-in-round", "1"], env
    )
    stalled_round = victim.wait_for_event("stalled", timeout=120)["round"]

    # Both survivors have submitted in that round and wait at the barrier for the victim.
    coordinator.wait_until(
        lambda s: (
            s["sync_round"] == stalled_round and sorted(s["pending_submissions"]) == ["a", "b"]
        ),
        timeout=120,
        what=f"the survivors to wait in round {stalled_round}",
    )
    time.sleep(1.0)
    assert coordinator.status()["sync_round"] == stalled_round, "the round waits for the victim"

    victim.kill()
    killed_at = time.monotonic()
    status = coordinator.wait_until(
        lambda s: s["sync_round"] > stalled_round,
        timeout=HEARTBEAT_TIMEOUT + 30,
        what=f"round {stalled_round} to close",
    )
    waited = time.monotonic() - killed_at
    # It closed because the heartbeat timeout evicted the victim, not before: the victim's last
    # beat was at most a quarter of the timeout before the kill.
    assert waited >= HEARTBEAT_TIMEOUT * 0.75 - 0.5, waited
    assert "victim" not in status["workers"]

    for worker in survivors:
        rounds = events(worker.finish(120), "round")
        assert len(rounds) == ROUNDS and all(r["contributed"] for r in rounds), rounds
        numbers = [r["round"] for r in rounds]
        assert numbers == list(range(numbers[0], numbers[0] + ROUNDS)), numbers
        assert stalled_round + 1 in numbers, "the survivors got the round the victim died in"
    evictions = [
        r
        for r in coordinator.audit()
        if r["event"] == "eviction" and r["details"]["reason"] == "heartbeat_timeout"
    ]
    assert [r["worker_id"] for r in evictions] == ["victim"], evictions
    assert coordinator.metrics()["diloco_worker_evictions_total"] == 1
