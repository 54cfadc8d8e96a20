"""Bytes on the wire: tensor dtypes, the submit frame and safetensors.

A submit frame (``/submit_pseudograd``, ``/init_params``) is forgather's::

    [4 bytes: big-endian uint32 N][N bytes: JSON header {worker_id, fmt, round?}][safetensors]

:class:`Frame` lays out the whole frame in **one** ``bytearray`` and exposes each tensor's
slot in it as a torch tensor (a view, no copy), so the pseudo-gradient is computed straight
into the bytes that are sent: no intermediate tensors, no serialization copy, no join of
header and payload. The frame's JSON header is padded to a fixed width, so the round can be
rewritten in place and the buffer reused round after round; the data section starts 8-byte
aligned.

Parameters coming back are plain safetensors, decoded with the ``safetensors`` library.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import struct
import sys
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import safetensors.torch
import torch

from .errors import ConfigurationError, ProtocolError

#: Largest round number a frame header has room for (u64, as the coordinator's).
_MAX_ROUND = 2**64 - 1


class WireDtype(enum.Enum):
    """Precision of tensors on the wire, as ``/info`` announces it (``bf16`` or ``fp32``)."""

    BF16 = "bf16"
    FP32 = "fp32"

    @classmethod
    def parse(cls, name: str) -> "WireDtype":
        """The dtype called ``name`` in ``/info``.

        Raises:
            ProtocolError: the coordinator asked for a dtype this SDK does not speak.
        """
        try:
            return cls(name)
        except ValueError:
            raise ProtocolError(
                f"the coordinator wants wire dtype {name!r}; this SDK speaks bf16 and fp32"
            ) from None

    @property
    def torch_dtype(self) -> torch.dtype:
        """The matching torch dtype."""
        return torch.bfloat16 if self is WireDtype.BF16 else torch.float32

    @property
    def safetensors_name(self) -> str:
        """The dtype's name in a safetensors header."""
        return "BF16" if self is WireDtype.BF16 else "F32"

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return 2 if self is WireDtype.BF16 else 4


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A named tensor's place in a model: name and shape."""

    name: str
    shape: Tuple[int, ...]

    @property
    def numel(self) -> int:
        """Elements in it (1 for a 0-dim tensor)."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @classmethod
    def of(cls, name: str, tensor: torch.Tensor) -> "TensorSpec":
        """The spec of ``tensor`` under ``name``."""
        return cls(name, tuple(int(d) for d in tensor.shape))


def _padded(text: str, width: int) -> bytes:
    data = text.encode("ascii")
    if len(data) > width:
        raise ConfigurationError(f"frame header {text!r} is longer than its {width}-byte slot")
    return data + b" " * (width - len(data))


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class Frame:
    """One submit frame in one reusable buffer.

    Args:
        worker_id: the submitting worker.
        specs: the tensors it carries, in the order they are laid out.
        dtype: their wire dtype.
        with_round: reserve room for a ``round`` field (pseudo-gradients carry the round of
            the parameters they were computed from; initial parameters carry none).
    """

    def __init__(
        self,
        worker_id: str,
        specs: Sequence[TensorSpec],
        dtype: WireDtype,
        *,
        with_round: bool = True,
    ) -> None:
        if sys.byteorder != "little":
            raise ConfigurationError("safetensors is little-endian; this host is not")
        self.worker_id = worker_id
        self.dtype = dtype
        self.specs = list(specs)
        self._with_round = with_round
        # The JSON header's slot: wide enough for the largest round, and 4 + width a multiple
        # of 8 so everything after it stays aligned.
        widest = self._header_json(_MAX_ROUND if with_round else None)
        self._header_width = _round_up(4 + len(widest), 8) - 4
        st_header, data_len = self._safetensors_header()
        self._data_start = 4 + self._header_width + 8 + len(st_header)
        self.buffer = bytearray(self._data_start + data_len)
        struct.pack_into(">I", self.buffer, 0, self._header_width)
        self.set_round(0 if with_round else None)
        struct.pack_into("<Q", self.buffer, 4 + self._header_width, len(st_header))
        start = 4 + self._header_width + 8
        self.buffer[start : start + len(st_header)] = st_header
        self.views: Dict[str, torch.Tensor] = {}
        offset = self._data_start
        for spec in self.specs:
            if spec.numel == 0:
                self.views[spec.name] = torch.empty(spec.shape, dtype=dtype.torch_dtype)
                continue
            flat = torch.frombuffer(
                self.buffer, dtype=dtype.torch_dtype, count=spec.numel, offset=offset
            )
            self.views[spec.name] = flat.view(spec.shape)
            offset += spec.numel * dtype.itemsize

    def _header_json(self, round_number: Optional[int]) -> str:
        header: Dict[str, object] = {"worker_id": self.worker_id, "fmt": "safetensors"}
        if round_number is not None:
            header["round"] = round_number
        return json.dumps(header, separators=(",", ":"))

    def _safetensors_header(self) -> Tuple[bytes, int]:
        header: Dict[str, object] = {}
        offset = 0
        for spec in self.specs:
            size = spec.numel * self.dtype.itemsize
            header[spec.name] = {
                "dtype": self.dtype.safetensors_name,
                "shape": list(spec.shape),
                "data_offsets": [offset, offset + size],
            }
            offset += size
        text = json.dumps(header, separators=(",", ":"))
        # Padded so the data section starts 8-byte aligned, as the safetensors library does.
        return _padded(text, _round_up(8 + len(text), 8) - 8), offset

    def set_round(self, round_number: Optional[int]) -> None:
        """Writes the round the pseudo-gradient was computed from into the header."""
        if round_number is not None and not self._with_round:
            raise ValueError("this frame was built without room for a round")
        text = self._header_json(round_number)
        self.buffer[4 : 4 + self._header_width] = _padded(text, self._header_width)

    @property
    def payload(self) -> memoryview:
        """The safetensors part of the frame."""
        return memoryview(self.buffer)[4 + self._header_width :]

    def __len__(self) -> int:
        return len(self.buffer)

    def view(self) -> memoryview:
        """The whole frame as a view of the buffer (what is sent; no copy)."""
        return memoryview(self.buffer)

    def fill_from(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Copies (and casts) ``tensors`` into their slots."""
        with torch.no_grad():
            for spec in self.specs:
                self.views[spec.name].copy_(tensors[spec.name].detach())


def encode_frame(
    worker_id: str,
    tensors: Mapping[str, torch.Tensor],
    dtype: WireDtype,
    round_number: Optional[int] = None,
) -> Frame:
    """A frame carrying ``tensors`` (sorted by name) cast to ``dtype``."""
    specs = [TensorSpec.of(name, tensors[name]) for name in sorted(tensors)]
    frame = Frame(worker_id, specs, dtype, with_round=round_number is not None)
    if round_number is not None:
        frame.set_round(round_number)
    frame.fill_from(tensors)
    return frame


def parse_frame(data: bytes) -> Tuple[Dict[str, Any], memoryview]:
    """Splits a frame into its JSON header and safetensors payload (for tests and tools).

    Raises:
        ProtocolError: the frame is truncated or its header is not JSON.
    """
    if len(data) < 4:
        raise ProtocolError("frame shorter than its length prefix")
    (length,) = struct.unpack_from(">I", data, 0)
    if len(data) < 4 + length:
        raise ProtocolError("frame ends inside its header")
    try:
        header = json.loads(bytes(data[4 : 4 + length]))
    except ValueError as error:
        raise ProtocolError(f"frame header is not JSON: {error}") from None
    return header, memoryview(data)[4 + length :]


def decode_params(data: bytes, path: str) -> Dict[str, torch.Tensor]:
    """Decodes a safetensors body (``/register``, ``/submit_pseudograd``, …) into CPU tensors.

    Raises:
        ProtocolError: the body is not safetensors, or holds dtypes other than F32 and BF16.
    """
    try:
        tensors = safetensors.torch.load(bytes(data) if not isinstance(data, bytes) else data)
    except Exception as error:  # the library raises its own SafetensorError and others
        raise ProtocolError(f"{path} returned invalid safetensors: {error}") from None
    for name, tensor in tensors.items():
        if tensor.dtype not in (torch.float32, torch.bfloat16):
            raise ProtocolError(f"{path} returned {name} as {tensor.dtype}; expected F32 or BF16")
    return tensors
