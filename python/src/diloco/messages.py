"""What the coordinator's JSON and tensor responses carry, as typed values."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .errors import ProtocolError
from .protocol import WIRE_FORMAT, WIRE_FORMATS
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
            ProtocolError: a field is missing, or the wire format is unknown.
        """
        try:
            expected = info["expected_client_settings"]
            wire_format = expected["wire_format"]
            # The SDK asks for safetensors on every tensor request (WIRE_FORMAT_QUERY), so
            # either announced codec works; an unknown one means a newer protocol.
            if wire_format not in WIRE_FORMATS:
                raise ProtocolError(
                    f"the coordinator announces wire format {wire_format!r}; this SDK knows "
                    f"{sorted(WIRE_FORMATS)} and asks for {WIRE_FORMAT}"
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
