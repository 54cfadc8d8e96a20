"""The bulk plane: workers learn it at registration, move tensors over it, and never send their
token to it in clear."""

from __future__ import annotations

from pathlib import Path

from harness import Processes, credentials_dir, events, fresh_token, token_dir

ROUNDS = 3


def test_workers_use_the_advertised_cleartext_bulk_plane_without_their_token(
    processes: Processes, tmp_path: Path
) -> None:
    token = fresh_token("bulk")
    tokens = token_dir(tmp_path / "tokens", token)
    coordinator = processes.coordinator(
        "training: {min_workers: 2, sync_every: 10, heartbeat_timeout_seconds: 20}\n"
        f"auth: {{token_dir: {tokens}}}\n"
        "bulk: {listen: '127.0.0.1:0'}\n"
    )
    assert coordinator.bulk_url and coordinator.bulk_url != coordinator.url
    env = {
        "DILOCO_CREDENTIALS_DIR": str(
            credentials_dir(tmp_path / "creds", coordinator.url, token=token)
        )
    }
    workers = [
        processes.python_worker(w, ["--seed", str(i), "--rounds", str(ROUNDS)], env)
        for i, w in enumerate(["a", "b"])
    ]
    for worker in workers:
        lines = worker.finish(180)
        rounds = events(lines, "round")
        assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1))
        assert all(r["contributed"] for r in rounds)
        assert events(lines, "done")[0]["bulk_url"] == coordinator.bulk_url

    metrics = coordinator.metrics(token)
    # The control plane only redirects tensor paths, so every byte went over the bulk plane …
    assert metrics["diloco_upload_bytes_total"] > 0
    # … and no request brought the bearer there.
    assert metrics["diloco_bulk_cleartext_bearer_total"] == 0
