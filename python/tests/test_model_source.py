"""The model source, as a forgather worker meets it: the coordinator starts from a sharded
Hugging Face checkpoint written by ``safetensors.torch.save_file`` (no ``/init_params``), serves
the model definition at ``/model_def`` as a deterministic tar that Python's ``tarfile`` reads,
with ``X-Forgather-Model-Hash`` equal to ``/info.model_hash`` (recomputed here from the
reference's formula), and ``/register`` answers with exactly the checkpoint's tensors.

Requests use only the standard library (``urllib``), as forgather's client does."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from harness import Processes, fresh_token, token_dir


def request(url: str, token: str, body: Any = None) -> Tuple[int, Dict[str, str], bytes]:
    """One request the way forgather's client makes it; returns status, headers, body."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def sharded_checkpoint(directory: Path) -> Dict[str, torch.Tensor]:
    """Two shards and an index, as ``save_pretrained`` lays them out."""
    generator = torch.Generator().manual_seed(7)
    tensors = {
        "embed.weight": torch.randn(16, 8, generator=generator),
        "layers.0.weight": torch.randn(8, 8, generator=generator),
        "layers.0.bias": torch.randn(8, generator=generator),
        "head.weight": torch.randn(4, 8, generator=generator),
    }
    shards = {
        "model-00001-of-00002.safetensors": ["embed.weight", "layers.0.weight"],
        "model-00002-of-00002.safetensors": ["layers.0.bias", "head.weight"],
    }
    directory.mkdir(parents=True)
    weight_map = {}
    for shard, names in shards.items():
        save_file({name: tensors[name] for name in names}, str(directory / shard))
        weight_map.update({name: shard for name in names})
    index = {"metadata": {"total_size": 4 * sum(t.numel() for t in tensors.values())}}
    index["weight_map"] = weight_map
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return tensors


def definition(directory: Path) -> Dict[str, bytes]:
    """A model definition directory; returns the files a bundle must carry."""
    files = {
        "config.json": b'{"hidden_size": 8, "num_layers": 1}',
        "modeling/model.py": b"import torch\n\nclass Model(torch.nn.Module):\n    pass\n",
        "tokenizer.json": b'{"model": {"vocab": {"a": 0}}}',
    }
    for name, data in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    # Never in the bundle: weights, hidden files, bytecode caches.
    (directory / "model.safetensors").write_bytes(b"not served")
    (directory / ".cache").mkdir()
    (directory / ".cache" / "x").write_bytes(b"not served")
    (directory / "modeling" / "__pycache__").mkdir()
    (directory / "modeling" / "__pycache__" / "model.pyc").write_bytes(b"not served")
    return files


def test_a_forgather_worker_starts_from_model_def_and_register(
    processes: Processes, tmp_path: Path
) -> None:
    tensors = sharded_checkpoint(tmp_path / "checkpoint")
    expected_files = definition(tmp_path / "definition")
    token = fresh_token("model-source")
    token_dir(tmp_path / "token", token)
    coordinator = processes.coordinator(
        f"model: {{initial_parameters: {tmp_path / 'checkpoint'}, "
        f"definition_dir: {tmp_path / 'definition'}}}\n"
        f"auth: {{token_dir: {tmp_path / 'token'}}}\n"
    )

    status, _, body = request(f"{coordinator.url}/info", token)
    assert status == 200, body
    info = json.loads(body)
    assert info["num_parameters"] == sum(t.numel() for t in tensors.values())

    # The definition is the team's code: not for whoever can reach the port.
    status, _, _ = request(f"{coordinator.url}/model_def", "not-the-token")
    assert status == 401

    status, headers, bundle = request(f"{coordinator.url}/model_def", token)
    assert status == 200, bundle
    headers = {k.lower(): v for k, v in headers.items()}
    assert headers["content-type"] == "application/x-tar"
    assert headers["x-forgather-model-hash"] == info["model_hash"]

    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:") as archive:
        members = archive.getmembers()
        assert [m.name for m in members] == sorted(expected_files)
        for member in members:
            assert member.isfile() and member.mtime == 0 and member.mode == 0o644
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "", "")
            extracted = archive.extractfile(member)
            assert extracted is not None and extracted.read() == expected_files[member.name]

    # §2.7: sha256 over sorted (arcname, NUL, bytes), folded with the parameters' hash. The
    # parameters' hash is the coordinator's (the no-definition /info value), so recompute the
    # bundle half and check the fold.
    bundle_hash = hashlib.sha256()
    for name in sorted(expected_files):
        bundle_hash.update(name.encode() + b"\0" + expected_files[name])
    param_lines = "".join(
        f"{name}:{list(tensors[name].shape)}\n" for name in sorted(tensors)
    )
    param_hash = hashlib.sha256(param_lines.encode()).hexdigest()
    folded = hashlib.sha256(f"{param_hash}:{bundle_hash.hexdigest()}".encode()).hexdigest()
    assert info["model_hash"] == folded

    shapes = {name: list(t.shape) for name, t in tensors.items()}
    status, _, params = request(
        f"{coordinator.url}/register", token, {"worker_id": "w0", "param_shapes": shapes}
    )
    assert status == 200, params
    received = load_safetensors(params)
    assert sorted(received) == sorted(tensors)
    for name, tensor in tensors.items():
        assert torch.equal(received[name].float(), tensor), name
