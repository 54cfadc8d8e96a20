"""A Python DiLoCo worker for the tests: the SDK training the Rust example's model on the
same task. Prints one JSON line per event, like ``diloco-example-worker``.

    student_worker.py --worker-id p0 --seed 1 --rounds 6 [--hook] [--save-params FILE]

Credentials come from the environment (``DILOCO_CREDENTIALS_DIR``, ``DILOCO_URL``, …).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import safetensors.torch
import torch

from diloco import DiLoCoWorker
from student_task import Rng, Teacher, mse, params_digest, student


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--hook", action="store_true", help="sync from the optimizer's post-step hook"
    )
    parser.add_argument("--save-params", help="write the final parameters to this safetensors file")
    parser.add_argument(
        "--step-delay", type=float, default=0.0, help="seconds to sleep per inner step"
    )
    parser.add_argument("--stall-in-round", type=int, help="hang forever in this round (0-based)")
    args = parser.parse_args()

    # One thread, as the Rust worker: results stay reproducible and workers share the cores.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = student()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    teacher = Teacher()
    eval_x, eval_y = teacher.batch(Rng(999), 512)
    data = Rng(1000 + args.seed)

    def eval_loss() -> float:
        with torch.no_grad():
            return mse(model, eval_x, eval_y).item()

    with DiLoCoWorker(
        model, optimizer, worker_id=args.worker_id, hook_optimizer=args.hook
    ) as worker:
        emit(
            event="joined",
            worker=args.worker_id,
            round=worker.round,
            eval_loss=eval_loss(),
            sync_every=worker.sync_every,
        )
        for round_index in range(args.rounds):
            total = 0.0
            report = None
            for step in range(worker.sync_every):
                if args.stall_in_round == round_index and step == 1:
                    emit(event="stalled", worker=args.worker_id, round=worker.round)
                    time.sleep(3600)
                x, y = teacher.batch(data, args.batch)
                loss = mse(model, x, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
                if args.step_delay:
                    time.sleep(args.step_delay)
                report = None if args.hook else worker.step()
            if args.hook:
                # The hook synced inside the round's last optimizer.step().
                assert worker.steps_since_sync == 0, "the hook should have synced"
                report = worker.last_report
            assert report is not None
            emit(
                event="round",
                worker=args.worker_id,
                round=report.round,
                train_loss=total / worker.sync_every,
                eval_loss=eval_loss(),
                contributed=report.contributed,
                upload_bytes=report.upload_bytes,
                params_sha256=params_digest(dict(model.named_parameters())),
            )
        if args.save_params:
            safetensors.torch.save_file(
                {name: p.detach().cpu().contiguous() for name, p in model.named_parameters()},
                args.save_params,
            )
        emit(
            event="done",
            worker=args.worker_id,
            eval_loss=eval_loss(),
            token_reloads=worker.client.token_reloads,
            bulk_url=worker.client.bulk_url,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
