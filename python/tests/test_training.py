"""Python and Rust workers train one model together through the real coordinator."""

from __future__ import annotations

import math
from pathlib import Path

import safetensors.torch
import torch

from harness import Processes, credentials_dir, events, fresh_token, token_dir

WORKER_TIMEOUT = 240.0
ROUNDS = 6


def test_two_python_workers_and_a_rust_worker_train_one_model_and_hold_identical_parameters(
    processes: Processes, tmp_path: Path
) -> None:
    token = fresh_token("training")
    tokens = token_dir(tmp_path / "tokens", token)
    coordinator = processes.coordinator(
        f"training: {{min_workers: 3, sync_every: 20, heartbeat_timeout_seconds: 20}}\n"
        f"auth: {{token_dir: {tokens}}}\n"
    )
    creds = credentials_dir(tmp_path / "creds", coordinator.url, token=token)
    env = {"DILOCO_CREDENTIALS_DIR": str(creds)}
    saved = {name: tmp_path / f"{name}.safetensors" for name in ("p0", "p1", "r0")}
    python = [
        processes.python_worker(
            "p0", ["--seed", "0", "--rounds", str(ROUNDS), "--save-params", str(saved["p0"])], env
        ),
        # The second one syncs from the optimizer's post-step hook instead of worker.step().
        processes.python_worker(
            "p1",
            ["--seed", "1", "--rounds", str(ROUNDS), "--hook", "--save-params", str(saved["p1"])],
            env,
        ),
    ]
    rust = processes.rust_worker(
        "r0",
        [
            "--url",
            coordinator.url,
            "--token-file",
            str(creds / "token"),
            "--seed",
            "2",
            "--rounds",
            str(ROUNDS),
            "--save-params",
            str(saved["r0"]),
        ],
    )
    outputs = {
        "p0": python[0].finish(WORKER_TIMEOUT),
        "p1": python[1].finish(WORKER_TIMEOUT),
        "r0": rust.finish(WORKER_TIMEOUT),
    }

    # Every worker took part in every round, and each one's loss fell well below the start.
    joined_losses = []
    for worker, lines in outputs.items():
        rounds = events(lines, "round")
        assert [r["round"] for r in rounds] == list(range(1, ROUNDS + 1)), (worker, rounds)
        assert all(r["contributed"] for r in rounds), (worker, rounds)
        start = events(lines, "joined")[0]["eval_loss"]
        end = rounds[-1]["eval_loss"]
        assert end < 0.2 * start, f"{worker}: eval loss {start} -> {end}"
        joined_losses.append(start)
    # They started from the same parameters on the same task: the same eval loss (computed by
    # libtorch through tch and through PyTorch).
    assert max(joined_losses) - min(joined_losses) <= 1e-5 * max(joined_losses), joined_losses

    # After every round the Python workers hold the same parameters bit for bit …
    p0_rounds, p1_rounds = events(outputs["p0"], "round"), events(outputs["p1"], "round")
    for a, b in zip(p0_rounds, p1_rounds):
        assert a["params_sha256"] == b["params_sha256"], (a, b)
    # … and the Rust worker scores the same with its own (same eval set, same parameters).
    for a, r in zip(p0_rounds, events(outputs["r0"], "round")):
        assert a["round"] == r["round"]
        assert math.isclose(a["eval_loss"], r["eval_loss"], rel_tol=1e-5), (a, r)

    # The final parameters: identical tensor by tensor, across languages.
    held = {name: safetensors.torch.load_file(str(path)) for name, path in saved.items()}
    names = sorted(held["r0"])
    assert names == sorted(held["p0"]) == sorted(held["p1"])
    assert names == [
        "head.bias",
        "head.weight",
        "layer1.bias",
        "layer1.weight",
        "layer2.bias",
        "layer2.weight",
    ]
    for name in names:
        assert torch.equal(held["p0"][name], held["r0"][name]), name
        assert torch.equal(held["p1"][name], held["r0"][name]), name

    status = coordinator.status(token)
    assert status["sync_round"] == ROUNDS
    # Everyone deregistered on the way out.
    assert status["workers"] == {}, status["workers"]
