"""The submit frame: forgather's layout, safetensors any reader accepts, one reusable buffer."""

from __future__ import annotations

import struct

import pytest
import safetensors.torch
import torch

from diloco.errors import ProtocolError
from diloco.wire import Frame, TensorSpec, WireDtype, decode_params, encode_frame, parse_frame


def tensors() -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "layer.weight": torch.randn(5, 3, generator=generator),
        "layer.bias": torch.randn(5, generator=generator),
        "scale": torch.tensor(1.5),
    }


@pytest.mark.parametrize("dtype", [WireDtype.BF16, WireDtype.FP32])
def test_a_frame_is_length_json_header_and_safetensors_in_the_wire_dtype(dtype: WireDtype) -> None:
    frame = encode_frame("worker-1", tensors(), dtype, round_number=12)
    data = bytes(frame.buffer)
    (length,) = struct.unpack(">I", data[:4])
    header, payload = parse_frame(data)
    assert header == {"worker_id": "worker-1", "fmt": "safetensors", "round": 12}
    assert (4 + length) % 8 == 0, "the payload starts 8-byte aligned"
    decoded = safetensors.torch.load(bytes(payload))
    for name, value in tensors().items():
        assert decoded[name].dtype == dtype.torch_dtype
        # Cast exactly as torch casts (bf16: round to nearest even).
        assert torch.equal(decoded[name], value.to(dtype.torch_dtype)), name
    assert len(frame) == len(data)


def test_the_round_is_rewritten_in_place_and_the_buffer_reused() -> None:
    specs = [TensorSpec("w", (2, 2))]
    frame = Frame("w0", specs, WireDtype.BF16)
    buffer, size = frame.buffer, len(frame)
    for round_number in (0, 9, 10, 123456789, 2**64 - 1):
        frame.set_round(round_number)
        assert parse_frame(bytes(frame.buffer))[0]["round"] == round_number
        assert frame.buffer is buffer and len(frame) == size


def test_views_write_straight_into_the_sent_bytes() -> None:
    frame = Frame("w0", [TensorSpec("a", (3,)), TensorSpec("b", (2, 2))], WireDtype.FP32)
    torch.sub(torch.ones(2, 2), torch.full((2, 2), 0.25), out=frame.views["b"])
    decoded = safetensors.torch.load(bytes(frame.payload))
    assert torch.equal(decoded["b"], torch.full((2, 2), 0.75))
    assert torch.equal(decoded["a"], torch.zeros(3))


def test_the_sent_view_is_the_buffer_itself() -> None:
    frame = encode_frame("w0", tensors(), WireDtype.FP32, round_number=1)
    view = frame.view()
    assert view.obj is frame.buffer and bytes(view) == bytes(frame.buffer)


def test_a_frame_without_a_round_has_no_round_field() -> None:
    frame = encode_frame("init", tensors(), WireDtype.FP32)
    assert parse_frame(bytes(frame.buffer))[0] == {"worker_id": "init", "fmt": "safetensors"}


def test_garbage_parameters_are_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="invalid safetensors"):
        decode_params(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}", "/register")
    ints = safetensors.torch.save({"x": torch.arange(3)})
    with pytest.raises(ProtocolError, match="expected F32 or BF16"):
        decode_params(ints, "/register")


def test_unknown_wire_dtypes_are_refused() -> None:
    with pytest.raises(ProtocolError, match="fp8"):
        WireDtype.parse("fp8")
