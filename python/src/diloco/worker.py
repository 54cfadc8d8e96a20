"""DiLoCo for any PyTorch training loop: :class:`DiLoCoWorker`.

The worker joins the run (adopting the coordinator's settings and parameters), lets the loop
take ``sync_every`` inner optimizer steps, then :meth:`DiLoCoWorker.sync` uploads the
pseudo-gradient Δ = θ_round − θ_local and loads the averaged parameters that come back.

A sync survives a coordinator restart: it retries with backoff while the coordinator is
unreachable, registers again if the coordinator forgot the worker, and resubmits the same
pseudo-gradient if the coordinator is still at the round it was computed from (otherwise it
adopts the coordinator's parameters and drops that round's local steps, never applying them
against parameters they do not belong to).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
import time
import weakref
from typing import Any, Callable, Dict, Mapping, Optional, TypeVar

import torch

from .client import CoordinatorClient
from .credentials import Credentials
from .errors import (
    ConfigurationError,
    CoordinatorRefused,
    DiLoCoError,
    GaveUpError,
    ModelMismatchError,
)
from .heartbeat import Heartbeat, StepCounter
from .messages import ParamsBlob, ServerSettings
from .protocol import (
    ALREADY_INITIALIZED,
    DUPLICATE_SUBMISSION,
    ENV_WORKER_ID,
    REGISTER,
    SLICE_MISMATCH,
    STALE_ROUND,
    SUBMIT_PSEUDOGRAD,
    UNKNOWN_WORKER,
)
from .retry import is_transient
from .wire import Frame, TensorSpec, WireDtype, decode_params, encode_frame

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Worker ids the coordinator accepts: 1–253 letters, digits and ``- _ . : @``.
WORKER_ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:@-]{1,253}$")
#: Shortest heartbeat period.
MIN_HEARTBEAT_INTERVAL = 0.1


@dataclasses.dataclass(frozen=True)
class SyncReport:
    """What a sync did.

    Attributes:
        round: the round of the parameters now loaded.
        contributed: the pseudo-gradient was folded in (``False``: the coordinator had moved
            on or lost the round, and the local steps were dropped).
        upload_bytes: size of the submit frame.
        seconds: wall time of the sync (upload, waiting for the round, loading).
    """

    round: int
    contributed: bool
    upload_bytes: int
    seconds: float


def default_worker_id() -> str:
    """``DILOCO_WORKER_ID``, else ``<hostname>-<pid>`` with characters the coordinator
    refuses replaced by ``-``."""
    configured = os.environ.get(ENV_WORKER_ID, "").strip()
    if configured:
        return configured
    raw = f"{socket.gethostname()}-{os.getpid()}"
    return re.sub(r"[^A-Za-z0-9_.:@-]", "-", raw)[:253]


class DiLoCoWorker:
    """A DiLoCo worker wrapped around a model and its inner optimizer.

    Constructing it joins the run: it reads ``/info``, offers the model's parameters as the
    initial ones if the coordinator has none, registers, loads the coordinator's parameters
    into the model and starts the heartbeat. Then either call :meth:`step` after each inner
    optimizer step, or pass ``hook_optimizer=True`` to have it called by the optimizer.

    Args:
        model: the module whose parameters are trained (all of ``named_parameters()``).
        optimizer: the inner optimizer (e.g. AdamW); needed only with ``hook_optimizer``.
            Its state carries across rounds, as in DiLoCo.
        credentials: where the coordinator is; default :meth:`Credentials.from_env`.
        worker_id: unique id of this worker; default :func:`default_worker_id`.
        sync_every: inner steps per round, overriding ``/info`` (which is authoritative in
            the protocol: override only if you know the coordinator does not mind).
        hook_optimizer: register :meth:`step` as the optimizer's post-step hook.
        initialize: send this model's parameters as the initial ones if the coordinator
            has none (the first worker to do so wins).
        heartbeat_interval: seconds between heartbeats; default a quarter of the
            coordinator's heartbeat timeout.
        reconnect_budget: how long joining and each sync keep retrying while the
            coordinator is unreachable before raising :class:`GaveUpError`.
        hostname: reported at registration; default the machine's hostname.
        client: a ready :class:`CoordinatorClient` (``credentials`` is then ignored).

    Raises:
        ConfigurationError: bad credentials, worker id or settings.
        AuthenticationError: the coordinator refused the credentials.
        ModelMismatchError: the coordinator's model has other names or shapes.
        GaveUpError: the coordinator stayed unreachable for ``reconnect_budget`` seconds.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: Optional[torch.optim.Optimizer] = None,
        *,
        credentials: Optional[Credentials] = None,
        worker_id: Optional[str] = None,
        sync_every: Optional[int] = None,
        hook_optimizer: bool = False,
        initialize: bool = True,
        heartbeat_interval: Optional[float] = None,
        reconnect_budget: float = 300.0,
        hostname: Optional[str] = None,
        client: Optional[CoordinatorClient] = None,
    ) -> None:
        self.worker_id = worker_id or default_worker_id()
        if not WORKER_ID_PATTERN.match(self.worker_id):
            raise ConfigurationError(
                f"worker id {self.worker_id!r} must be 1-253 letters, digits and - _ . : @"
            )
        if sync_every is not None and sync_every < 1:
            raise ConfigurationError("sync_every must be at least 1")
        if hook_optimizer and optimizer is None:
            raise ConfigurationError("hook_optimizer needs the optimizer")
        self.model = model
        self.optimizer = optimizer
        self.hostname = hostname or socket.gethostname()
        self.reconnect_budget = reconnect_budget
        self._params: Dict[str, torch.nn.Parameter] = dict(sorted(model.named_parameters()))
        if not self._params:
            raise ConfigurationError("the model has no parameters to train")
        self._specs = [TensorSpec.of(name, p) for name, p in self._params.items()]
        self._owns_client = client is None
        self.client = client or CoordinatorClient(credentials or Credentials.from_env())
        self._steps = StepCounter()
        self._steps_since_sync = 0
        self._snapshot: Dict[str, torch.Tensor] = {}
        self._hook: Optional[Any] = None
        self.round = 0
        self.last_report: Optional[SyncReport] = None
        self._sync_count = 0
        self._total_sync_time = 0.0
        self._registered = False
        try:
            self.settings = self._join(initialize)
        except BaseException:
            if self._registered:
                _deregister(self.client, self.worker_id)
            if self._owns_client:
                self.client.close()
            raise
        self.sync_every = sync_every or self.settings.sync_every
        interval = heartbeat_interval or self.settings.heartbeat_timeout / 4
        self._heartbeat = Heartbeat(
            self.client, self.worker_id, max(interval, MIN_HEARTBEAT_INTERVAL), self._steps
        )
        self._heartbeat.start()
        # Leaves the run (stops beating, deregisters) when closed, collected or at exit.
        self._finalizer = weakref.finalize(
            self, _leave, self.client, self.worker_id, self._heartbeat, self._owns_client
        )
        if hook_optimizer and optimizer is not None:
            self._hook = optimizer.register_step_post_hook(_StepHook(weakref.ref(self)))
        logger.info(
            "worker %s joined at round %d (sync_every %d, upload %s)",
            self.worker_id,
            self.round,
            self.sync_every,
            self.settings.upload_dtype.value,
        )

    # -- public API --------------------------------------------------------------------

    @property
    def upload_dtype(self) -> WireDtype:
        """The dtype pseudo-gradients are uploaded in (from ``/info``)."""
        return self.settings.upload_dtype

    @property
    def steps_since_sync(self) -> int:
        """Inner steps taken in the current round."""
        return self._steps_since_sync

    def step(self) -> Optional[SyncReport]:
        """Counts one inner step; every ``sync_every`` steps it syncs.

        Returns:
            The :class:`SyncReport` when this step ended a round, else ``None``.
        """
        self._steps.add()
        self._steps_since_sync += 1
        if self._steps_since_sync >= self.sync_every:
            return self.sync()
        return None

    def sync(self) -> SyncReport:
        """Uploads the pseudo-gradient of the steps since the last sync, waits for the round
        to close and loads the new parameters into the model.

        Raises:
            GaveUpError: the coordinator stayed unreachable for ``reconnect_budget`` seconds.
            CoordinatorRefused: the coordinator refused the upload for good (e.g. a NaN in
                the pseudo-gradient: ``kind == "not_finite"``).
            ConfigurationError: the worker was closed.
        """
        if self.closed:
            raise ConfigurationError(f"worker {self.worker_id} has left the run (closed)")
        started = time.monotonic()
        frame = self._encode_pseudo_gradient()
        deadline = started + self.reconnect_budget
        attempt = 0
        while True:
            if self._heartbeat.forgotten.is_set():
                # The coordinator restarted without us (or evicted us): register again.
                self._heartbeat.forgotten.clear()
                restart = self._register(deadline)
                if restart.round != self.round:
                    return self._adopt(restart, len(frame), started)
            try:
                blob = self.client.submit(frame)
            except CoordinatorRefused as error:
                if error.kind == UNKNOWN_WORKER:
                    self._heartbeat.forgotten.set()
                    continue
                if error.kind == STALE_ROUND:
                    current = self._retry_until(deadline, self.client.global_params)
                    return self._adopt(current, len(frame), started)
                if error.kind == DUPLICATE_SUBMISSION:
                    # An earlier attempt got in but its response was lost: wait for the round.
                    blob = self._await_round_after(self.round, deadline)
                    return self._finish(blob, True, len(frame), started)
                if not error.is_transient:
                    raise
                attempt = self._back_off(error, attempt, deadline)
            except DiLoCoError as error:
                if not is_transient(error):
                    raise
                attempt = self._back_off(error, attempt, deadline)
            else:
                return self._finish(blob, True, len(frame), started)

    def report_stats(self, **stats: float) -> None:
        """Statistics for the next heartbeat, e.g. ``loss=…, tokens_total=…``."""
        self._heartbeat.report({k: float(v) for k, v in stats.items()})

    def next_command(self) -> Optional[str]:
        """A command the operator relayed through the coordinator (``save_checkpoint``,
        ``save_and_stop`` or ``abort``), oldest first; ``None`` if there is none."""
        return self._heartbeat.next_command()

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The parameters as of the last sync (what the coordinator sent), by name."""
        return dict(self._snapshot)

    def close(self) -> None:
        """Leaves the run: removes the optimizer hook, stops the heartbeat, deregisters
        (best effort) and closes the client it created. Idempotent."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._finalizer()

    @property
    def closed(self) -> bool:
        """Whether the worker has left the run."""
        return not self._finalizer.alive

    def __enter__(self) -> "DiLoCoWorker":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"DiLoCoWorker(worker_id={self.worker_id!r}, round={self.round}, "
            f"sync_every={self.sync_every}, url={self.client.url!r})"
        )

    # -- joining -----------------------------------------------------------------------

    def _join(self, initialize: bool) -> ServerSettings:
        deadline = time.monotonic() + self.reconnect_budget
        settings = self._retry_until(deadline, self.client.info)
        if not settings.parameters_initialized and initialize:
            initial = encode_frame(
                self.worker_id,
                {name: p.detach() for name, p in self._params.items()},
                WireDtype.FP32,
            )
            try:
                self.client.init_params(initial)
                logger.info("worker %s sent the initial parameters", self.worker_id)
            except CoordinatorRefused as error:
                if error.kind != ALREADY_INITIALIZED:
                    raise
        # One buffer for every upload of this worker's life.
        self._frame = Frame(self.worker_id, self._specs, settings.upload_dtype)
        start = self._register(deadline)
        self._registered = True
        self._load(start, REGISTER)
        return settings

    def _register(self, deadline: float) -> ParamsBlob:
        shapes = {spec.name: spec.shape for spec in self._specs}

        def register() -> ParamsBlob:
            return self.client.register(self.worker_id, shapes, self.hostname)

        try:
            return self._retry_until(deadline, register)
        except CoordinatorRefused as error:
            if error.kind == SLICE_MISMATCH:
                raise ModelMismatchError(
                    f"the coordinator's model does not match this one: {error.server_message}"
                ) from None
            raise

    # -- tensors -----------------------------------------------------------------------

    def _encode_pseudo_gradient(self) -> Frame:
        """Δ = θ_round − θ_local for every parameter, written straight into the frame's
        buffer in the upload dtype: the only full copy of the pseudo-gradient."""
        frame = self._frame
        with torch.no_grad():
            for name, live in self._params.items():
                local = live.detach()
                if local.device.type != "cpu":
                    local = local.to("cpu")
                torch.sub(self._snapshot[name], local, out=frame.views[name])
        frame.set_round(self.round)
        return frame

    def _load(self, blob: ParamsBlob, path: str) -> None:
        """Loads ``blob`` into the live parameters and keeps it as the snapshot."""
        fresh = decode_params(blob.data, path)
        snapshot: Dict[str, torch.Tensor] = {}
        for name, live in self._params.items():
            value = fresh.get(name)
            if value is None:
                raise ModelMismatchError(f"the coordinator sent no parameter {name}")
            if tuple(value.shape) != tuple(live.shape):
                raise ModelMismatchError(
                    f"{name}: the coordinator's shape is {tuple(value.shape)}, "
                    f"the model's {tuple(live.shape)}"
                )
            # The snapshot holds exactly what the live parameter holds after the copy.
            snapshot[name] = value.to(dtype=live.dtype)
        with torch.no_grad():
            for name, live in self._params.items():
                live.copy_(snapshot[name])
        self._snapshot = snapshot
        self.round = blob.round

    def _finish(
        self, blob: ParamsBlob, contributed: bool, upload_bytes: int, started: float
    ) -> SyncReport:
        self._load(blob, SUBMIT_PSEUDOGRAD)
        self._steps_since_sync = 0
        report = SyncReport(self.round, contributed, upload_bytes, time.monotonic() - started)
        self.last_report = report
        self._sync_count += 1
        self._total_sync_time += report.seconds
        self._heartbeat.report_sync(
            {
                "sync_count": self._sync_count,
                "last_sync_time": report.seconds,
                "total_sync_time": self._total_sync_time,
                "last_send_mb": upload_bytes / 1e6,
                "last_recv_mb": len(blob.data) / 1e6,
                "sync_every": self.sync_every,
            }
        )
        return report

    def _adopt(self, blob: ParamsBlob, upload_bytes: int, started: float) -> SyncReport:
        logger.warning(
            "worker %s: the coordinator is at round %d, ours is %d; adopting its parameters "
            "and dropping this round's local steps",
            self.worker_id,
            blob.round,
            self.round,
        )
        return self._finish(blob, False, upload_bytes, started)

    # -- waiting and retrying ----------------------------------------------------------

    def _back_off(self, error: DiLoCoError, attempt: int, deadline: float) -> int:
        if time.monotonic() >= deadline:
            raise GaveUpError(self.reconnect_budget, error) from None
        delay = self.client.retry.delay(attempt)
        logger.warning("worker %s: %s; retrying in %.1fs", self.worker_id, error, delay)
        time.sleep(delay)
        return attempt + 1

    def _retry_until(self, deadline: float, call: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return call()
            except DiLoCoError as error:
                if not is_transient(error):
                    raise
                attempt = self._back_off(error, attempt, deadline)

    def _await_round_after(self, round_number: int, deadline: float) -> ParamsBlob:
        while True:
            blob = self._retry_until(deadline, self.client.global_params)
            if blob.round > round_number:
                return blob
            if time.monotonic() >= deadline:
                raise GaveUpError(
                    self.reconnect_budget,
                    DiLoCoError(f"round {round_number} did not close"),
                )
            time.sleep(0.2)


class _StepHook:
    """The optimizer post-step hook; holds the worker weakly so it can be collected."""

    def __init__(self, worker: "weakref.ReferenceType[DiLoCoWorker]") -> None:
        self._worker = worker

    def __call__(
        self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Mapping[str, Any]
    ) -> None:
        worker = self._worker()
        if worker is not None and not worker.closed:
            worker.step()


def _leave(
    client: CoordinatorClient, worker_id: str, heartbeat: Heartbeat, owns_client: bool
) -> None:
    """Stops the heartbeat and deregisters (best effort); run once by the finalizer."""
    heartbeat.stop()
    try:
        _deregister(client, worker_id)
    finally:
        if owns_client:
            client.close()


def _deregister(client: CoordinatorClient, worker_id: str) -> None:
    """Deregisters, logging instead of raising: leaving must not fail a training script."""
    try:
        client.deregister(worker_id, timeout=10.0)
        logger.info("worker %s left the run", worker_id)
    except DiLoCoError as error:
        logger.warning("worker %s could not deregister: %s", worker_id, error)
