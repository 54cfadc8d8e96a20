"""Upload rate of the Python SDK, for ``make bench`` (tests/benches/coordinator.rs runs it).

Against a coordinator whose model is ``--tensors`` fp32 matrices ``layers.<i>.weight`` of
``--rows`` × ``--cols`` (the bench writes its initial parameters), a :class:`DiLoCoWorker`
syncs ``--repetitions`` times while a second registered worker (the blocker) keeps each round
open. Each sync is timed from its start (pseudo-gradient computed into the frame, upload)
until the coordinator reports the upload received, validated and folded (``/status``
``pending_submissions``); then the blocker leaves so the round closes, and rejoins.

Prints one JSON object: ``python_upload_mbps`` (the median as the Rust bench takes it, the
upper middle sample; MB = 10^6 bytes of the frame),
``upload_bytes`` and the samples.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from typing import List

import httpx
import torch
from torch import nn

from diloco import CoordinatorClient, Credentials, DiLoCoWorker, SyncReport

WORKER_ID = "python-sdk"
BLOCKER_ID = "python-blocker"


class Layer(nn.Module):
    """One ``weight`` matrix."""

    def __init__(self, rows: int, cols: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(rows, cols))


def wait_until_folded(status_url: str, deadline: float) -> None:
    with httpx.Client(trust_env=False) as http:
        while WORKER_ID not in http.get(status_url).json()["pending_submissions"]:
            if time.monotonic() > deadline:
                raise TimeoutError("the upload was not folded in time")
            time.sleep(0.002)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--tensors", type=int, required=True)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--cols", type=int, default=1024)
    parser.add_argument("--repetitions", type=int, default=4)
    args = parser.parse_args()

    credentials = Credentials(url=args.url)
    model = nn.Module()
    model.layers = nn.ModuleList(Layer(args.rows, args.cols) for _ in range(args.tensors))
    blocker = CoordinatorClient(credentials)
    blocker.register(BLOCKER_ID)
    worker = DiLoCoWorker(model, worker_id=WORKER_ID, credentials=credentials, initialize=False)
    rates: List[float] = []
    upload_bytes = 0
    for _ in range(args.repetitions):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1e-3)  # some local progress, so the pseudo-gradient is not zero
        reports: List[SyncReport] = []
        started = time.monotonic()
        sync = threading.Thread(target=lambda out=reports: out.append(worker.sync()))
        sync.start()
        wait_until_folded(f"{args.url}/status", started + 600)
        elapsed = time.monotonic() - started
        blocker.deregister(BLOCKER_ID)  # the round closes; the sync returns
        sync.join(600)
        if not reports or not reports[0].contributed:
            raise RuntimeError("the sync did not contribute")
        upload_bytes = reports[0].upload_bytes
        rates.append(upload_bytes / elapsed / 1e6)
        blocker.register(BLOCKER_ID)
    worker.close()
    blocker.deregister(BLOCKER_ID)
    blocker.close()
    print(
        json.dumps(
            {
                "python_upload_mbps": sorted(rates)[len(rates) // 2],
                "upload_bytes": upload_bytes,
                "samples_mbps": rates,
            }
        )
    )


if __name__ == "__main__":
    main()
