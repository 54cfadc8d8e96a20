"""forgather's client is stdlib ``urllib``: work-unit dispatch, run statistics and the token
budget, driven with nothing else against the real coordinator (reference §1.10, §1.11, §2.4,
§6 items 10, 59, 67, 71-74)."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from harness import Processes, fresh_token, token_dir


class Urllib:
    """forgather's way of calling the coordinator: JSON over ``urllib``, a bearer token."""

    def __init__(self, url: str, token: str, scheme: str = "Bearer") -> None:
        self.url = url
        self.auth = f"{scheme} {token}"

    def call(self, path: str, body: Optional[Dict[str, Any]] = None) -> Tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        method = "GET" if data is None else "POST"
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", self.auth)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def json(self, path: str, body: Optional[Dict[str, Any]] = None) -> Tuple[int, Any]:
        status, raw = self.call(path, body)
        return status, json.loads(raw)


def bits(b64: str, count: int) -> List[int]:
    """The set bits of a forgather bitmap (least significant bit first in each byte)."""
    raw = base64.b64decode(b64)
    return [u for u in range(count) if raw[u // 8] >> (u % 8) & 1]


def test_work_units_and_statistics_over_urllib(processes: Processes, tmp_path: Path) -> None:
    worker_token, admin_token = fresh_token("worker"), fresh_token("admin")
    workers = token_dir(tmp_path / "tokens", worker_token)
    admins = token_dir(tmp_path / "admin-tokens", admin_token)
    initial = torch.arange(32, dtype=torch.float32).reshape(8, 4) / 4
    save_file({"w": initial}, str(tmp_path / "init.safetensors"))
    coordinator = processes.coordinator(
        f"model: {{initial_parameters: {tmp_path / 'init.safetensors'}}}\n"
        f"auth: {{token_dir: {workers}, admin_token_dir: {admins}}}\n"
    )
    # forgather sends the scheme in lower case too.
    api = Urllib(coordinator.url, worker_token, scheme="bearer")
    admin = Urllib(coordinator.url, admin_token, scheme="BEARER")

    status, params = api.call("/register", {"worker_id": "a"})
    assert status == 200
    assert torch.equal(load_safetensors(params)["w"], initial)
    assert api.call("/register", {"worker_id": "b"})[0] == 200

    queue = {"dataset_id": "ds-1f2e", "shuffle_seed": 42}
    hint = {"length": 1000, "path": "tiny", "split": "train", "data_files": ["a.txt"]}
    for worker in ("a", "b"):
        assert api.json("/datasets/register", {"worker_id": worker, **queue, "hint": hint}) == (
            200,
            {"total_units": 1024},
        )
    status, mismatch = api.json(
        "/datasets/register", {"worker_id": "b", **queue, "hint": {"length": 999}}
    )
    assert status == 409 and "length" in mismatch["error"]

    taken: Dict[str, List[int]] = {"a": [], "b": []}
    for i in range(20):
        worker = "ab"[i % 2]
        status, reply = api.json("/work/request", {"worker_id": worker, **queue})
        assert status == 200
        taken[worker].append(reply["unit_id"])
    assert sorted(taken["a"] + taken["b"]) == list(range(20))
    assert not set(taken["a"]) & set(taken["b"])
    for unit in taken["a"]:
        assert api.json("/work/complete", {"worker_id": "a", **queue, "unit_id": unit}) == (
            200,
            {"ack": True},
        )
    status, _ = api.json("/work/complete", {"worker_id": "a", **queue, "unit_id": 1024})
    assert status == 400
    unknown = {"worker_id": "a", "dataset_id": "nope", "shuffle_seed": 0}
    status, _ = api.json("/work/request", unknown)
    assert status == 404

    status, queues = api.json("/work/queues")
    assert status == 200 and isinstance(queues, list) and len(queues) == 1
    assert "issued_bitmap_b64" not in queues[0]
    assert queues[0]["hint"] == hint
    status, detail = admin.json("/work/queue?dataset_id=ds-1f2e&shuffle_seed=42")
    assert status == 200
    assert bits(detail["issued_bitmap_b64"], 1024) == list(range(20))
    assert bits(detail["completed_bitmap_b64"], 1024) == sorted(taken["a"])
    assert detail["by_worker"] == {
        "a": {"units_issued": 10, "units_completed": 10},
        "b": {"units_issued": 10, "units_completed": 0},
    }

    # Statistics: b's tokens stay in the totals after it leaves; the history keeps the newest.
    def beat(worker: str, tokens: int, steps: int) -> Dict[str, Any]:
        # json.dumps writes NaN as a bare word, as forgather's workers send it.
        stats = {"tokens_total": tokens, "step_total": steps, "loss": 3.0, "mfu": float("nan")}
        body = json.dumps({"worker_id": worker, "steps_per_second": 2.0, "stats": stats})
        request = urllib.request.Request(
            coordinator.url + "/heartbeat", data=body.encode(), method="POST"
        )
        request.add_header("Authorization", api.auth)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    beat("a", 100, 1)
    beat("b", 300, 3)
    beat("b", 400, 4)
    assert api.json("/deregister", {"worker_id": "b"}) == (200, {"status": "ok"})
    beat("a", 250, 2)
    status, report = api.json("/status")
    assert report["aggregate_stats"]["total_tokens"] == 650
    assert "mfu" not in report["workers"]["a"]["stats"], "non-finite statistics are dropped"
    assert report["aggregate_stats"]["total_steps"] == 6
    status, history = api.json("/stats_history?max_points=2")
    assert status == 200
    assert history["count"] == 2 and history["downsampled"] is True
    assert history["records"][-1]["total_tokens"] == 650

    # The token budget: lowering it below the total stops every worker on its next heartbeat.
    status, budget = admin.json("/control/update_token_budget", {"token_budget": 600})
    assert status == 200
    assert budget == {"status": "ok", "token_budget": 600, "budget_stop_sent": True}
    assert beat("a", 260, 3)["command"] == "save_and_stop"
    status, progress = api.json("/status")
    assert progress["token_progress"]["fraction"] == 1.0
    status, _ = api.json("/control/update_token_budget", {"token_budget": 0})
    assert status == 403, "only the admin token changes the budget"
