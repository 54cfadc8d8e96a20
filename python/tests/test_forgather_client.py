"""Three workers written the way forgather's client talks (reference §2: stdlib ``urllib``,
``Authorization: Bearer``, ``!I``-framed submit bodies, tensors decoded with the codec ``/info``
announces) train five rounds against the coordinator, starting from nothing but the URL and the
token:

- the model definition comes from ``/model_def`` (a tar whose ``X-Forgather-Model-Hash`` must
  equal ``/info.model_hash``), extracted with ``tarfile``'s ``data`` filter and imported;
- the parameters come from ``/register`` (the coordinator started from a sharded checkpoint,
  nobody POSTs ``/init_params``);
- the data comes from work units (``/datasets/register``, ``/work/request``,
  ``/work/complete``): no unit is trained twice;
- heartbeats carry forgather's stats; pseudo-gradients go up as ``torch.save`` archives with no
  ``fmt`` (forgather's default) when the server announces pickle, as safetensors otherwise.

The held-out loss must fall well below the starting model's."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import socket
import struct
import sys
import tarfile
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from safetensors.torch import save_file

from harness import Processes, fresh_token, token_dir

ROUNDS = 5
WORKERS = 3
INNER_STEPS = 25
# The coordinator splits a dataset into 1024 units (forgather's --default-work-units); with
# 4096 rows a unit is 4 rows, and a worker trains on 8 units a round.
DATASET_ROWS = 4096
UNITS = 1024
UNITS_PER_ROUND = 8
FEATURES = 8

MODEL_SOURCE = b'''"""A small regression model, as a forgather model definition ships it."""
import json
from pathlib import Path

import torch


def build(directory):
    config = json.loads((Path(directory) / "config.json").read_text())
    return torch.nn.Sequential(
        torch.nn.Linear(config["features"], config["hidden"]),
        torch.nn.Tanh(),
        torch.nn.Linear(config["hidden"], 1),
    )
'''


class Forgather:
    """The requests of forgather's ``DiLoCoClient``: JSON or framed bodies, bearer token,
    tensor bodies decoded with the announced codec."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token
        self.wire_format = "pickle"

    def call(
        self, path: str, body: Optional[bytes] = None, json_body: Any = None
    ) -> Tuple[Dict[str, str], bytes]:
        if json_body is not None:
            body = json.dumps(json_body).encode()
        request = urllib.request.Request(
            self.url + path, data=body, method="GET" if body is None else "POST"
        )
        request.add_header("Authorization", f"Bearer {self.token}")
        if json_body is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                headers = {k.lower(): v for k, v in response.headers.items()}
                return headers, response.read()
        except urllib.error.HTTPError as error:
            raise AssertionError(f"{path}: {error.code} {error.read()!r}") from None

    def json(self, path: str, body: Any = None) -> Any:
        return json.loads(self.call(path, json_body=body)[1])

    def tensors(self, data: bytes) -> Dict[str, torch.Tensor]:
        if self.wire_format == "pickle":
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return load_safetensors(data)

    def submit(self, worker_id: str, pseudo_gradient: Dict[str, torch.Tensor]) -> bytes:
        header: Dict[str, Any] = {"worker_id": worker_id}
        if self.wire_format == "pickle":
            buffer = io.BytesIO()
            torch.save(pseudo_gradient, buffer)  # no "fmt": pickle, forgather's default
            payload = buffer.getvalue()
        else:
            header["fmt"] = "safetensors"
            payload = save_safetensors(pseudo_gradient)
        header_bytes = json.dumps(header).encode()
        frame = struct.pack("!I", len(header_bytes)) + header_bytes + payload
        return self.call("/submit_pseudograd", body=frame)[1]


def make_data(seed: int, rows: int) -> Tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, FEATURES, generator=generator)
    w = torch.linspace(-1.0, 1.0, FEATURES)
    return x, torch.tanh(x @ w).unsqueeze(1) * 2.0


def write_model(tmp_path: Path) -> Tuple[Path, Path, Dict[str, torch.Tensor]]:
    """The definition directory and a two-shard checkpoint of the initial model."""
    definition = tmp_path / "definition"
    definition.mkdir()
    (definition / "config.json").write_text(json.dumps({"features": FEATURES, "hidden": 16}))
    (definition / "modeling.py").write_bytes(MODEL_SOURCE)
    module = load_module(definition)
    torch.manual_seed(0)
    state = {k: v.detach().clone() for k, v in module.build(definition).state_dict().items()}
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    names = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": names[:2],
        "model-00002-of-00002.safetensors": names[2:],
    }
    weight_map = {}
    for shard, members in shards.items():
        save_file({n: state[n] for n in members}, str(checkpoint / shard))
        weight_map.update({n: shard for n in members})
    index = json.dumps({"weight_map": weight_map})
    (checkpoint / "model.safetensors.index.json").write_text(index)
    return definition, checkpoint, state


def load_module(directory: Path) -> Any:
    name = f"definition_{hashlib.sha256(str(directory).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, directory / "modeling.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def worker(
    client: Forgather,
    worker_id: str,
    workdir: Path,
    data: Tuple[torch.Tensor, torch.Tensor],
    results: Dict[str, Any],
) -> None:
    """One forgather worker's life: info, definition, register, ROUNDS rounds, deregister."""
    info = client.json("/info")
    settings = info["expected_client_settings"]
    client.wire_format = settings["wire_format"]
    upload_dtype = torch.bfloat16 if settings["upload_dtype"] == "bf16" else torch.float32

    # The definition: checked against /info, extracted safely, imported.
    headers, bundle = client.call("/model_def")
    assert headers["x-forgather-model-hash"] == info["model_hash"]
    target = workdir / worker_id
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:") as archive:
        archive.extractall(target, filter="data")
    model = load_module(target).build(target)

    # The parameters: from /register, into the model built empty.
    shapes = {name: list(p.shape) for name, p in model.state_dict().items()}
    _, body = client.call(
        "/register",
        json_body={
            "worker_id": worker_id,
            "hostname": socket.gethostname(),
            "param_shapes": shapes,
        },
    )
    model.load_state_dict(client.tensors(body))

    dataset = {"worker_id": worker_id, "dataset_id": "regression", "shuffle_seed": 11}
    total = client.json("/datasets/register", {**dataset, "hint": {"length": DATASET_ROWS}})
    assert total == {"total_units": UNITS}
    x, y = data
    units: List[int] = []
    tokens = 0
    for _ in range(ROUNDS):
        mine = []
        for _ in range(UNITS_PER_ROUND):
            unit = client.json("/work/request", dataset)
            assert "unit_id" in unit, unit
            mine.append(unit["unit_id"])
        units.extend(mine)
        per_unit = DATASET_ROWS // UNITS
        rows = torch.cat([torch.arange(u * per_unit, (u + 1) * per_unit) for u in mine])
        start = {k: v.detach().clone() for k, v in model.state_dict().items()}
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        for _ in range(INNER_STEPS):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x[rows]), y[rows])
            loss.backward()
            optimizer.step()
        tokens += INNER_STEPS * len(rows)
        client.json(
            "/heartbeat",
            {
                "worker_id": worker_id,
                "steps_per_second": 100.0,
                "stats": {
                    "loss": loss.item(),
                    "tokens_total": tokens,
                    "step_total": len(units) // UNITS_PER_ROUND * INNER_STEPS,
                },
            },
        )
        for unit_id in mine:
            client.json("/work/complete", {**dataset, "unit_id": unit_id})
        local = model.state_dict()
        pseudo = {k: (start[k] - local[k]).to(upload_dtype) for k in start}
        model.load_state_dict(client.tensors(client.submit(worker_id, pseudo)))
    client.json("/deregister", {"worker_id": worker_id})
    results[worker_id] = {"units": units, "state": model.state_dict()}


@pytest.mark.parametrize("wire_format", ["pickle", "safetensors"])
def test_forgather_workers_train_from_model_def_register_and_work_units(
    processes: Processes, tmp_path: Path, wire_format: str
) -> None:
    definition, checkpoint, initial = write_model(tmp_path)
    token = fresh_token("forgather")
    token_dir(tmp_path / "token", token)
    coordinator = processes.coordinator(
        f"model: {{initial_parameters: {checkpoint}, definition_dir: {definition}}}\n"
        f"training: {{min_workers: {WORKERS}, sync_every: {INNER_STEPS}, "
        f"wire_format: {wire_format}, heartbeat_timeout_seconds: 60}}\n"
        f"auth: {{token_dir: {tmp_path / 'token'}}}\n"
    )
    data = make_data(seed=1, rows=DATASET_ROWS)
    results: Dict[str, Any] = {}
    errors: List[BaseException] = []

    def run(worker_id: str) -> None:
        try:
            client = Forgather(coordinator.url, token)
            worker(client, worker_id, tmp_path / "workers", data, results)
        except BaseException as error:  # reported by the test thread below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(f"w{i}",)) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(t.is_alive() for t in threads), "a worker did not finish within 240 s"
    assert not errors, errors

    # Every worker holds the same final parameters; no work unit was trained twice.
    states = [results[w]["state"] for w in sorted(results)]
    for state in states[1:]:
        for name in state:
            assert torch.equal(state[name], states[0][name]), name
    units = sorted(u for r in results.values() for u in r["units"])
    assert units == list(range(WORKERS * ROUNDS * UNITS_PER_ROUND)), units
    status = coordinator.status(token)
    assert status["sync_round"] == ROUNDS

    # Converged: the held-out loss fell well below the starting model's.
    module = load_module(definition)
    held_out_x, held_out_y = make_data(seed=2, rows=512)

    def held_out(state: Dict[str, torch.Tensor]) -> float:
        model = module.build(definition)
        model.load_state_dict(state)
        with torch.no_grad():
            return torch.nn.functional.mse_loss(model(held_out_x), held_out_y).item()

    before, after = held_out(initial), held_out(states[0])
    print(f"{wire_format}: held-out loss {before:.4f} -> {after:.4f}", file=sys.stderr)
    assert after < 0.5 * before, (before, after)
