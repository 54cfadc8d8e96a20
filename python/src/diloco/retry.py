"""Retrying transient failures: which errors are worth another attempt, and how long to wait."""

from __future__ import annotations

import dataclasses

from .errors import CoordinatorRefused, CoordinatorUnreachable


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently transient failures are retried.

    Attributes:
        attempts: attempts in all (1: no retry).
        first_delay: seconds before the first retry; doubles each time.
        max_delay: longest pause between attempts.
    """

    attempts: int = 4
    first_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based)."""
        return float(min(self.first_delay * 2.0 ** min(attempt, 16), self.max_delay))


def is_transient(error: BaseException) -> bool:
    """Whether retrying the same request later may succeed."""
    if isinstance(error, CoordinatorUnreachable):
        return True
    return isinstance(error, CoordinatorRefused) and error.is_transient
