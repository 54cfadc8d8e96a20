"""The contract's ``torch.save`` codec against PyTorch itself.

Our writer's archives must load with ``torch.load(weights_only=True)`` bit-exactly, and
whatever ``torch.save`` writes (random shapes, every dtype, transposed and sliced views,
shared storages, 0-d and empty tensors) must read back through our reader bit-exactly. The
codec is driven through ``diloco-contract safetensors-to-torch-save`` and
``torch-save-to-safetensors``.
"""

from __future__ import annotations

import io
import subprocess
import zipfile

import httpx
import pytest
import safetensors.torch
import torch
from harness import Processes, binary

from diloco import protocol
from diloco.client import CoordinatorClient
from diloco.credentials import Credentials
from diloco.wire import WireDtype, encode_frame

DTYPES = [
    torch.float64,
    torch.float32,
    torch.float16,
    torch.bfloat16,
    torch.int64,
    torch.int32,
    torch.int16,
    torch.int8,
    torch.uint8,
    torch.bool,
]


def run(command: str, data: bytes) -> bytes:
    result = subprocess.run(
        [str(binary("diloco-contract")), command], input=data, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def random_tensor(shape: tuple, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    values = torch.randn(shape, generator=generator) * 100
    return values.to(dtype)


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (so NaN payloads and -0.0 count), dtype and shape included."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    flat_a, flat_b = a.contiguous().reshape(-1), b.contiguous().reshape(-1)
    return flat_a.view(torch.uint8).equal(flat_b.view(torch.uint8))


@pytest.mark.parametrize("seed", range(8))
def test_our_archives_load_with_weights_only_bit_exactly(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for i, dtype in enumerate(DTYPES):
        rank = int(torch.randint(0, 4, (1,), generator=generator))
        shape = tuple(int(d) for d in torch.randint(0, 5, (rank,), generator=generator))
        tensors[f"layer.{i}.{str(dtype).removeprefix('torch.')}"] = random_tensor(
            shape, dtype, generator
        )
    tensors["nan_and_signed_zero"] = torch.tensor([float("nan"), -0.0, float("inf")])
    archive = run("safetensors-to-torch-save", safetensors.torch.save(tensors))
    loaded = torch.load(io.BytesIO(archive), map_location="cpu", weights_only=True)
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        assert bit_equal(loaded[name], tensor), name
    # The container is what torch.save writes: stored entries, 64-byte aligned storages.
    with zipfile.ZipFile(io.BytesIO(archive)) as container:
        assert container.read("archive/byteorder") == b"little"
        assert container.read("archive/version") == b"3\n"
        for info in container.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            if info.filename.startswith("archive/data/"):
                # The local header's extra (zip64 + padding) is what aligns the data.
                at = info.header_offset
                local_extra = int.from_bytes(archive[at + 28 : at + 30], "little")
                start = info.header_offset + 30 + len(info.filename) + local_extra
                assert start % 64 == 0, info.filename


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_what_torch_save_writes_reads_back_bit_exactly(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(7)
    base = random_tensor((6, 9), dtype, generator)
    cube = random_tensor((3, 4, 5), dtype, generator)
    tensors = {
        "base": base,
        "transposed": base.t(),
        "rows": base[2:5],
        "block": base[1:5:2, 3:8],
        "column": base[:, 4],
        "permuted": cube.permute(2, 0, 1),
        "cube_slice": cube[1],
        "expanded": base[0:1].expand(4, 9),
        "zero_d": base[3, 3],
        "empty": base[6:],
    }
    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    decoded = safetensors.torch.load(run("torch-save-to-safetensors", buffer.getvalue()))
    assert set(decoded) == set(tensors)
    for name, tensor in tensors.items():
        assert bit_equal(decoded[name], tensor), name


def test_a_module_state_dict_and_parameters_read_back() -> None:
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.BatchNorm1d(3))
    for tensors in (model.state_dict(), dict(model.named_parameters())):
        buffer = io.BytesIO()
        torch.save(tensors, buffer)
        decoded = safetensors.torch.load(run("torch-save-to-safetensors", buffer.getvalue()))
        assert set(decoded) == set(tensors)
        for name, tensor in tensors.items():
            assert bit_equal(decoded[name], tensor.detach()), name


class Evil:
    def __reduce__(self):  # noqa: D105 - the classic pickle payload
        import os

        return (os.system, ("echo pwned",))


def test_a_pickle_that_would_run_code_is_refused_by_name() -> None:
    buffer = io.BytesIO()
    torch.save({"w": torch.ones(2), "evil": Evil()}, buffer)
    result = subprocess.run(
        [str(binary("diloco-contract")), "torch-save-to-safetensors"],
        input=buffer.getvalue(),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert b"posix.system" in result.stderr or b"os.system" in result.stderr, result.stderr
    assert b"pwned" not in result.stdout


def test_the_sdk_works_with_a_coordinator_announcing_pickle_whose_replies_torch_loads(
    processes: Processes,
) -> None:
    """``training.wire_format: pickle``: ``/info`` announces it, a plain request (as a
    forgather worker sends it) gets a ``torch.save`` archive that ``torch.load(weights_only=True)``
    reads, and the SDK, which asks for safetensors, still gets safetensors."""
    coordinator = processes.coordinator("training: {min_workers: 1, wire_format: pickle}\n")
    client = CoordinatorClient(Credentials(url=coordinator.url))
    initial = {
        "w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "b": torch.tensor([0.5, -2.0]),
    }
    client.init_params(encode_frame("w0", initial, WireDtype.FP32))
    info = httpx.get(f"{coordinator.url}{protocol.INFO}", timeout=30).json()
    assert info["expected_client_settings"]["wire_format"] == "pickle"
    client.info()  # the SDK accepts a pickle-announcing coordinator
    blob = client.global_params()
    decoded = safetensors.torch.load(blob.data)
    assert all(torch.equal(decoded[name], value) for name, value in initial.items())
    plain = httpx.get(f"{coordinator.url}{protocol.GLOBAL_PARAMS}", timeout=30)
    assert plain.status_code == 200
    loaded = torch.load(io.BytesIO(plain.content), map_location="cpu", weights_only=True)
    assert set(loaded) == set(initial)
    for name, value in initial.items():
        assert bit_equal(loaded[name], value), name
