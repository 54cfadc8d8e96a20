"""The exceptions the SDK raises.

Every error derives from :class:`DiLoCoError`. Messages say what failed and what to do about
it; they never contain a bearer token (the SDK redacts any it knows before raising, and never
chains the HTTP library's exceptions, whose request objects carry the ``Authorization`` header).
"""

from __future__ import annotations

from typing import Iterable, Optional

REDACTED = "<redacted>"


def redact(text: str, secrets: Iterable[Optional[str]]) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by ``<redacted>``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


class DiLoCoError(Exception):
    """Base class of every error the SDK raises."""


class ConfigurationError(DiLoCoError):
    """The SDK cannot be set up: missing or unreadable credential files, a bad URL, a model
    the coordinator's settings do not fit."""


class CoordinatorUnreachable(DiLoCoError):
    """The coordinator could not be reached, or the connection broke mid-request. Transient:
    the worker retries these with backoff."""

    def __init__(self, url: str, path: str, detail: str) -> None:
        self.url = url
        self.path = path
        self.detail = detail
        super().__init__(f"cannot reach the coordinator at {url} ({path}): {detail}")


class CoordinatorRefused(DiLoCoError):
    """The coordinator answered with an error status.

    Attributes:
        path: the endpoint, e.g. ``/submit_pseudograd``.
        status: the HTTP status code.
        kind: the coordinator's machine-readable error kind (``unknown_worker``,
            ``stale_round``, ``duplicate_submission``, …), if it gave one.
        server_message: the coordinator's ``error`` text.
    """

    def __init__(
        self, path: str, status: int, server_message: str, kind: Optional[str] = None
    ) -> None:
        self.path = path
        self.status = status
        self.kind = kind
        self.server_message = server_message
        super().__init__(self._describe())

    def _describe(self) -> str:
        kind = f", {self.kind}" if self.kind else ""
        return f"coordinator refused {self.path} with {self.status}{kind}: {self.server_message}"

    @property
    def is_transient(self) -> bool:
        """503: the coordinator is not initialized yet, restarting, or at a limit."""
        return self.status == 503


class AuthenticationError(CoordinatorRefused):
    """401: the coordinator refused the credentials, even after the token file was re-read."""

    def __init__(self, path: str, server_message: str, token_hint: str) -> None:
        self.token_hint = token_hint
        super().__init__(path, 401, server_message, kind="unauthorized")

    def _describe(self) -> str:
        return (
            f"the coordinator refused our credentials for {self.path} (401: "
            f"{self.server_message}); {self.token_hint}"
        )


class RateLimitedError(CoordinatorRefused):
    """429: too many failed authentications from this address; wait for the window to end."""


class WorkerIdConflictError(CoordinatorRefused):
    """409 at registration: another worker (or this one before a restart) holds the id."""


class ModelMismatchError(DiLoCoError):
    """The coordinator's parameters do not fit this model (names, shapes)."""


class ProtocolError(DiLoCoError):
    """A response that does not follow the protocol (missing header, bad safetensors, …)."""


class GaveUpError(DiLoCoError):
    """The coordinator stayed unreachable for longer than the reconnect budget."""

    def __init__(self, budget_seconds: float, last_error: DiLoCoError) -> None:
        self.budget_seconds = budget_seconds
        self.last_error = last_error
        super().__init__(
            f"gave up after {budget_seconds:.0f}s without reaching the coordinator: {last_error}"
        )
