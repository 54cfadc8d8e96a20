"""The heartbeat: a background thread that tells the coordinator the worker is alive.

A worker that stops beating for ``heartbeat_timeout`` seconds is evicted and its round closes
without it. Each beat carries the inner steps per second since the last one and any statistics
the training loop reported; the reply may relay a command (``save_checkpoint``,
``save_and_stop``, ``abort``) queued with ``/control/command``.

A relayed command is never lost with a heartbeat reply: every beat acknowledges the id of the
newest command received (``command_ack``), and the coordinator sends a command again until its
id comes back. A command sent again before the acknowledgement arrived is queued once.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Deque, Dict, Optional

from .client import CoordinatorClient
from .errors import CoordinatorRefused, DiLoCoError
from .protocol import UNKNOWN_WORKER

logger = logging.getLogger(__name__)


class StepCounter:
    """Inner steps taken, shared between the training loop and the heartbeat thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._total = 0

    def add(self, n: int = 1) -> None:
        """Counts ``n`` inner steps."""
        with self._lock:
            self._total += n

    @property
    def total(self) -> int:
        """Steps counted so far."""
        with self._lock:
            return self._total


class Heartbeat:
    """Beats every ``interval`` seconds on a daemon thread until :meth:`stop`.

    Args:
        client: the coordinator client (shared with the training loop).
        worker_id: the worker it beats for.
        interval: seconds between beats.
        steps: the worker's step counter, for ``steps_per_second``.
    """

    def __init__(
        self, client: CoordinatorClient, worker_id: str, interval: float, steps: StepCounter
    ) -> None:
        self.client = client
        self.worker_id = worker_id
        self.interval = interval
        self.steps = steps
        #: Set when the coordinator answered ``unknown_worker``: it restarted without us or
        #: evicted us, and the worker must register again.
        self.forgotten = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._commands: Deque[str] = collections.deque()
        # The id of the newest command received (0: none yet), acknowledged by every beat.
        self._command_ack = 0
        self._stats: Dict[str, float] = {}
        # The latest sync bookkeeping, sent with every beat (not consumed like stats).
        self._sync_state: Dict[str, float] = {}
        self._thread = threading.Thread(
            target=self._run, name=f"diloco-heartbeat-{worker_id}", daemon=True
        )

    def start(self) -> None:
        """Starts the thread."""
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the thread (waits at most ``timeout`` seconds for a beat in flight)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def report(self, stats: Dict[str, float]) -> None:
        """Statistics to send with the next beat (the coordinator keeps ``loss``,
        ``tokens_total``, ``tok_per_sec``, … and aggregates them in ``/status``)."""
        with self._lock:
            self._stats.update(stats)

    def report_sync(self, sync_state: Dict[str, float]) -> None:
        """The worker's sync bookkeeping (``sync_count``, ``last_sync_time``,
        ``total_sync_time``, ``last_send_mb``, ``last_recv_mb``, ``sync_every``), sent with
        every beat from now on; ``/status`` shows it per worker."""
        with self._lock:
            self._sync_state = dict(sync_state)

    def next_command(self) -> Optional[str]:
        """The oldest command relayed by the coordinator and not yet taken, if any."""
        with self._lock:
            return self._commands.popleft() if self._commands else None

    def _run(self) -> None:
        last_time, last_steps = time.monotonic(), self.steps.total
        while not self._stop.wait(self.interval):
            now, steps = time.monotonic(), self.steps.total
            elapsed = now - last_time
            rate = (steps - last_steps) / elapsed if elapsed > 0 else None
            last_time, last_steps = now, steps
            with self._lock:
                stats, self._stats = self._stats, {}
                ack, sync_state = self._command_ack, dict(self._sync_state)
            try:
                reply = self.client.heartbeat(
                    self.worker_id, rate, stats or None, ack, sync_state or None
                )
            except CoordinatorRefused as error:
                if error.kind == UNKNOWN_WORKER:
                    self.forgotten.set()
                logger.debug("heartbeat refused: %s", error)
                continue
            except DiLoCoError as error:
                logger.debug("heartbeat failed: %s", error)
                continue
            except Exception:  # never let the thread die silently on a bug
                logger.exception("heartbeat failed unexpectedly")
                continue
            self.receive(reply)

    def receive(self, reply: Dict[str, object]) -> bool:
        """Takes in a heartbeat reply's command, if it has a new one; whether it did."""
        command, command_id = reply.get("command"), reply.get("command_id")
        if not isinstance(command, str):
            return False
        with self._lock:
            if isinstance(command_id, int) and not isinstance(command_id, bool):
                if command_id == self._command_ack:
                    return False  # sent again: our acknowledgement had not arrived yet
                self._command_ack = command_id
            # A coordinator that does not number commands (forgather's) sends each one once.
            self._commands.append(command)
        logger.info("coordinator relayed command %s", command)
        return True
