"""What the coordinator's JSON and tensor responses carry, as typed values."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .errors import ProtocolError
from .protocol import WIRE_FORMAT
from .wire import WireDtype


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """What ``/info`` tells a worker to adopt (``expected_client_settings``)."""

    sync_every: int
    upload_dtype: WireDtype
    download_dtype: WireDtype
    heartbeat_timeout: float
    parameters_initialized: bool
    sync_round: int

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> "ServerSettings":
        """Parses an ``/info`` body.

        Raises:
            ProtocolError: a field is missing, or the wire format is not safetensors.
        """
        try:
            expected = info["expected_client_settings"]
            wire_format = expected["wire_format"]
            if wire_format != WIRE_FORMAT:
                raise ProtocolError(
                    f"the coordinator wants wire format {wire_format!r}; this SDK speaks "
                    "safetensors only (pickle is never loaded)"
                )
            return cls(
                sync_every=int(expected["sync_every"]),
                upload_dtype=WireDtype.parse(expected["upload_dtype"]),
                download_dtype=WireDtype.parse(expected["download_dtype"]),
                heartbeat_timeout=float(expected["heartbeat_timeout"]),
                parameters_initialized=bool(info.get("parameters_initialized", True)),
                sync_round=int(info.get("sync_round", 0)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ProtocolError(f"/info is missing or has a malformed field: {error!r}") from None


@dataclasses.dataclass(frozen=True)
class ParamsBlob:
    """Parameters from the coordinator: safetensors bytes and the round they belong to."""

    round: int
    data: bytes
