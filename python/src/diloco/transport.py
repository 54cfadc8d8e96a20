"""Tensor transfers over the standard library's :mod:`http.client`.

Uploads (a frame's buffer) and responses carrying parameters are hundreds of megabytes. httpx
moves a body through h11 in 64 KiB events and joins the pieces afterwards: 470–650 MB/s for a
134 MB download on loopback, against ~1200 MB/s for ``http.client`` reading the body with one
``read`` (measured side by side on the development machine, 2026-12-02). Uploads go out the
same way, the frame's whole buffer handed to one ``sendall``. Everything else (small JSON
requests) stays on httpx.

One connection per transfer: no socket is shared between threads (the heartbeat thread and
the training loop), and a TLS handshake costs nothing next to the transfer it carries.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from typing import Any, Mapping, Optional


class TransferError(Exception):
    """A transfer failed below HTTP (connection, TLS, timeout); ``__cause__`` says why."""


class TensorResponse:
    """The parts of an ``httpx.Response`` the client reads, for a completed transfer."""

    def __init__(self, status_code: int, headers: http.client.HTTPMessage, content: bytes):
        self.status_code = status_code
        #: Case-insensitive ``get``, like httpx's headers.
        self.headers = headers
        self.content = content

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        """The body as JSON (``ValueError`` when it is not)."""
        return json.loads(self.content)

    def close(self) -> None:
        """Nothing to release: the body was read and the connection closed."""


def transfer(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: Optional[Any],
    context: ssl.SSLContext,
    timeout: float,
    connect_timeout: float,
) -> TensorResponse:
    """Sends one request and reads its whole response.

    ``body`` is any bytes-like object (a frame's buffer is sent as is, without a copy);
    ``timeout`` bounds each wait for the socket after connecting (a submission waits for the
    round to close), ``connect_timeout`` the connection and TLS handshake.

    Raises:
        TransferError: the connection, handshake, sending or reading failed.
    """
    parsed = urllib.parse.urlsplit(url)
    target = parsed.path or "/"
    if parsed.query:
        target += "?" + parsed.query
    host = parsed.hostname or ""
    connection: http.client.HTTPConnection
    if parsed.scheme == "https":
        connection = http.client.HTTPSConnection(
            host, parsed.port, timeout=connect_timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(host, parsed.port, timeout=connect_timeout)
    try:
        connection.connect()
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        connection.request(method, target, body=body, headers=dict(headers))
        response = connection.getresponse()
        content = response.read()
        return TensorResponse(response.status, response.headers, content)
    except (OSError, http.client.HTTPException) as error:
        raise TransferError(str(error) or type(error).__name__) from error
    finally:
        connection.close()
