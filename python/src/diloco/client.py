"""A typed HTTP client for the coordinator's endpoints (httpx for JSON, :mod:`diloco.transport`
for tensor transfers).

It adds what every call needs: the bearer token (re-read from its file when the coordinator
answers 401, so a rotation is followed without a restart), TLS with an optional client
certificate, the bulk plane (learned from ``X-Forgather-Bulk-Url``, never sent a bearer over
cleartext, asked for again when it stops answering), typed errors, and retries with backoff
for transient failures. The DiLoCo logic lives in :mod:`diloco.worker`.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)

import httpx

from .credentials import Credentials
from .errors import (
    AuthenticationError,
    ConfigurationError,
    CoordinatorRefused,
    CoordinatorUnreachable,
    DiLoCoError,
    ProtocolError,
    RateLimitedError,
    WorkerIdConflictError,
    redact,
)
from .messages import ParamsBlob, ServerSettings
from .protocol import (
    BULK_URL_HEADER,
    DEREGISTER,
    GLOBAL_PARAMS,
    HEALTH,
    HEARTBEAT,
    INFO,
    INIT_PARAMS,
    REGISTER,
    ROUND_HEADER,
    STATUS,
    SUBMIT_PSEUDOGRAD,
    TENSOR_PATHS,
    WIRE_FORMAT,
    WIRE_FORMAT_QUERY,
)
from .retry import RetryPolicy, is_transient
from .transport import TensorResponse, TransferError, transfer
from .wire import Frame

#: Seconds allowed to open a connection (TLS handshake included).
CONNECT_TIMEOUT = 10.0
# ROUND_HEADER, BULK_URL_HEADER and TENSOR_PATHS (tensor transfers go through
# :mod:`diloco.transport`) come from :mod:`diloco.protocol` and stay importable from here.
__all__ = ["CoordinatorClient", "ROUND_HEADER", "BULK_URL_HEADER", "TENSOR_PATHS"]

#: A response from httpx or, for tensor transfers, from :mod:`diloco.transport`.
Response = Union[httpx.Response, TensorResponse]

T = TypeVar("T")


class CoordinatorClient:
    """The coordinator's HTTP API.

    Safe to share between threads (the worker's heartbeat thread and the training loop).

    Args:
        credentials: where the coordinator is and how to authenticate.
        request_timeout: seconds for requests that do not wait for a round.
        submit_timeout: seconds for a submission (it waits until the round closes).
        retry: how :meth:`with_retries` retries transient failures (default
            :class:`RetryPolicy`'s defaults).
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        request_timeout: float = 60.0,
        submit_timeout: float = 3600.0,
        retry: Optional[RetryPolicy] = None,
    ) -> None:
        self.credentials = credentials
        self.request_timeout = request_timeout
        self.submit_timeout = submit_timeout
        self.retry = retry or RetryPolicy()
        self._lock = threading.Lock()
        self._token = credentials.read_token()
        # Every token seen, so error text can never carry one (even a previous one).
        self._known_tokens: List[str] = [self._token] if self._token else []
        self._bulk_url: Optional[str] = None
        self._token_reloads = 0
        # Proxies from the environment are ignored, as in the Rust client: a proxy between
        # workers and coordinator would see every tensor (and, over cleartext, the token).
        self._ssl = _ssl_context(credentials)
        self._http = httpx.Client(verify=self._ssl, trust_env=False, follow_redirects=False)

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def __enter__(self) -> "CoordinatorClient":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CoordinatorClient({self.credentials!r}, bulk_url={self.bulk_url!r})"

    # -- state -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The control plane's base URL."""
        return self.credentials.url

    @property
    def bulk_url(self) -> Optional[str]:
        """The bulk plane's URL, if the coordinator advertised one."""
        with self._lock:
            return self._bulk_url

    @property
    def token_reloads(self) -> int:
        """How many times a 401 made the client pick up a new token from its file."""
        with self._lock:
            return self._token_reloads

    # -- retries -----------------------------------------------------------------------

    def with_retries(self, call: Callable[[], T]) -> T:
        """Runs ``call``, retrying transient failures per :attr:`retry`."""
        attempt = 0
        while True:
            try:
                return call()
            except DiLoCoError as error:
                if not is_transient(error) or attempt + 1 >= self.retry.attempts:
                    raise
                time.sleep(self.retry.delay(attempt))
                attempt += 1

    # -- endpoints ---------------------------------------------------------------------

    def health(self) -> None:
        """``GET /health``."""
        self._send("GET", HEALTH)

    def info(self) -> ServerSettings:
        """``GET /info``: the settings a worker must adopt."""
        return ServerSettings.from_info(self._json(self._send("GET", INFO), INFO))

    def status(self) -> Dict[str, Any]:
        """``GET /status``."""
        return self._json(self._send("GET", STATUS), STATUS)

    def register(
        self,
        worker_id: str,
        param_shapes: Optional[Mapping[str, Sequence[int]]] = None,
        hostname: Optional[str] = None,
    ) -> ParamsBlob:
        """``POST /register``: the parameters to start from. Learns the bulk plane's URL
        (or forgets it, when the coordinator no longer advertises one).

        Raises:
            WorkerIdConflictError: the id is taken (a previous incarnation of this worker
                stays registered until the heartbeat timeout evicts it).
        """
        body: Dict[str, Any] = {"worker_id": worker_id}
        if hostname:
            body["hostname"] = hostname
        if param_shapes is not None:
            body["param_shapes"] = {name: list(shape) for name, shape in param_shapes.items()}
        response = self._send("POST", REGISTER, json_body=body)
        self._learn_bulk_url(response, clear_if_absent=True)
        return self._params(response, REGISTER)

    def heartbeat(
        self,
        worker_id: str,
        steps_per_second: Optional[float] = None,
        stats: Optional[Mapping[str, float]] = None,
        command_ack: Optional[int] = None,
        sync_state: Optional[Mapping[str, float]] = None,
    ) -> Dict[str, Any]:
        """``POST /heartbeat``: the reply (round, worker counts, maybe a ``command`` with its
        ``command_id``). ``command_ack`` is the id of the newest command received (0: none):
        the coordinator sends a command again until its id is acknowledged. ``sync_state``
        (``sync_count``, ``last_sync_time``, …) is shown per worker in ``/status``."""
        body: Dict[str, Any] = {"worker_id": worker_id}
        if steps_per_second is not None:
            body["steps_per_second"] = steps_per_second
        if stats:
            body["stats"] = dict(stats)
        if command_ack is not None:
            body["command_ack"] = command_ack
        if sync_state:
            body["sync_state"] = dict(sync_state)
        return self._json(self._send("POST", HEARTBEAT, json_body=body), HEARTBEAT)

    def deregister(self, worker_id: str, timeout: Optional[float] = None) -> None:
        """``POST /deregister``."""
        self._send("POST", DEREGISTER, json_body={"worker_id": worker_id}, timeout=timeout)

    def global_params(self) -> ParamsBlob:
        """``GET /global_params`` (bulk plane): the current parameters."""
        return self._params(self._send_bulk("GET", GLOBAL_PARAMS), GLOBAL_PARAMS)

    def submit(self, frame: Frame) -> ParamsBlob:
        """``POST /submit_pseudograd`` (bulk plane): waits for the round to close and returns
        the next parameters. The frame's buffer is streamed as is, never copied whole."""
        response = self._send_bulk("POST", SUBMIT_PSEUDOGRAD, frame=frame, timeout=self.submit_timeout)
        return self._params(response, SUBMIT_PSEUDOGRAD)

    def init_params(self, frame: Frame) -> ParamsBlob:
        """``POST /init_params``: offers this worker's parameters as the initial ones."""
        response = self._send("POST", INIT_PARAMS, frame=frame, timeout=self.submit_timeout)
        return self._params(response, INIT_PARAMS)

    def control(self, action: str, body: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
        """``POST /control/<action>``."""
        path = f"/control/{action}"
        return self._json(self._send("POST", path, json_body=dict(body or {})), path)

    # -- plumbing ----------------------------------------------------------------------

    def _bulk_target(self, path: str) -> Tuple[str, bool]:
        """The URL of a bulk path and whether the bearer may go with it: never to a
        cleartext bulk plane."""
        bulk = self.bulk_url
        if bulk is None:
            return self.url + path, True
        return bulk + path, bulk.startswith("https://")

    def _send_bulk(self, method: str, path: str, **kwargs: Any) -> Response:
        """Sends a bulk-path request. If the bulk plane is gone (a restarted coordinator
        listens elsewhere), asks the control plane again, whose 404 for bulk paths carries
        the new URL."""
        for _ in range(2):
            on_bulk = self.bulk_url is not None
            url, bearer = self._bulk_target(path)
            try:
                return self._send_to(method, url, path, bearer=bearer, **kwargs)
            except CoordinatorUnreachable:
                if not on_bulk:
                    raise
                with self._lock:
                    self._bulk_url = None
            except CoordinatorRefused as error:
                if not (error.status == 404 and not on_bulk and self.bulk_url is not None):
                    raise
        url, bearer = self._bulk_target(path)
        return self._send_to(method, url, path, bearer=bearer, **kwargs)

    def _send(self, method: str, path: str, **kwargs: Any) -> Response:
        return self._send_to(method, self.url + path, path, bearer=True, **kwargs)

    def _send_to(
        self,
        method: str,
        url: str,
        path: str,
        *,
        bearer: bool,
        json_body: Optional[Mapping[str, Any]] = None,
        frame: Optional[Frame] = None,
        timeout: Optional[float] = None,
    ) -> Response:
        sent_token = self._current_token() if bearer else None
        response = self._request(method, url, path, sent_token, json_body, frame, timeout)
        self._learn_bulk_url(response)
        # A 401 after a rotation: the token file has the new token by now.
        if response.status_code == 401 and bearer and self._refresh_token(sent_token):
            response.close()
            sent_token = self._current_token()
            response = self._request(method, url, path, sent_token, json_body, frame, timeout)
            self._learn_bulk_url(response)
        if response.is_success:
            return response
        raise self._refusal(path, response)

    def _request(
        self,
        method: str,
        url: str,
        path: str,
        token: Optional[str],
        json_body: Optional[Mapping[str, Any]],
        frame: Optional[Frame],
        timeout: Optional[float],
    ) -> Response:
        if path in TENSOR_PATHS:
            # Whatever /info announces, this SDK reads safetensors (pickle is never loaded).
            url = f"{url}?{WIRE_FORMAT_QUERY}={WIRE_FORMAT}"
        headers: Dict[str, str] = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        content: Any = None
        if frame is not None:
            # An explicit length and the buffer itself: sent as it is (no chunked encoding,
            # which forgather's server does not read; no joined copy).
            headers["Content-Type"] = "application/octet-stream"
            headers["Content-Length"] = str(len(frame))
            content = frame.view()
        elif json_body is not None:
            headers["Content-Type"] = "application/json"
            content = json.dumps(json_body).encode("utf-8")
        seconds = self.request_timeout if timeout is None else timeout
        if frame is not None or path in TENSOR_PATHS:
            try:
                return transfer(
                    method,
                    url,
                    headers,
                    content,
                    self._ssl,
                    timeout=seconds,
                    connect_timeout=min(seconds, CONNECT_TIMEOUT),
                )
            except TransferError as error:
                raise self._transport_error(url, path, error) from None
        try:
            # Not streamed: the whole body is read before this returns.
            return self._http.request(
                method,
                url,
                content=content,
                headers=headers,
                timeout=httpx.Timeout(seconds, connect=min(seconds, CONNECT_TIMEOUT)),
            )
        except httpx.TransportError as error:
            raise self._transport_error(url, path, error) from None

    def _transport_error(self, url: str, path: str, error: Exception) -> DiLoCoError:
        chain: List[BaseException] = []
        cause: Optional[BaseException] = error
        while cause is not None and len(chain) < 8:
            chain.append(cause)
            cause = cause.__cause__ or cause.__context__
        messages: List[str] = []
        for exception in chain:
            text = str(exception) or type(exception).__name__
            if text not in messages:  # httpx repeats its cause's message
                messages.append(text)
        detail = redact(": ".join(messages), self._known())
        if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain):
            return ConfigurationError(
                f"cannot verify the TLS certificate of {url} ({detail}); "
                f"check the CA bundle ({self.credentials.ca_file or 'system roots only'})"
            )
        base = url[: len(url) - len(path)] if url.endswith(path) else url
        return CoordinatorUnreachable(base, path, detail)

    def _refusal(self, path: str, response: Response) -> CoordinatorRefused:
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        message = redact(str(body.get("error") or "(no message)"), self._known())
        kind = body.get("kind") if isinstance(body.get("kind"), str) else None
        status = response.status_code
        if status == 401:
            return AuthenticationError(path, message, self._token_hint())
        if status == 429:
            retry_after = response.headers.get("retry-after")
            hint = f"; retry after {retry_after}s" if retry_after else ""
            return RateLimitedError(path, status, message + hint, kind)
        if status == 409 and path == REGISTER:
            return WorkerIdConflictError(path, status, message, kind)
        return CoordinatorRefused(path, status, message, kind)

    def _token_hint(self) -> str:
        if self.credentials.token_file is not None:
            return (
                f"the token in {self.credentials.token_file} is not (or no longer) valid "
                "(it was re-read after the 401)"
            )
        if self.credentials.has_token:
            return "the token given directly is not (or no longer) valid"
        return "no token is configured: give a token file or a client certificate"

    def _current_token(self) -> Optional[str]:
        with self._lock:
            return self._token

    def _known(self) -> List[str]:
        with self._lock:
            return list(self._known_tokens)

    def _refresh_token(self, rejected: Optional[str]) -> bool:
        """Re-reads the token; whether there is one other than the rejected one."""
        if self.credentials.token_file is None:
            return False
        fresh = self.credentials.read_token()
        with self._lock:
            if fresh != self._token:
                self._token = fresh
                self._token_reloads += 1
                if fresh and fresh not in self._known_tokens:
                    self._known_tokens.append(fresh)
            return fresh is not None and fresh != rejected

    def _learn_bulk_url(self, response: Response, clear_if_absent: bool = False) -> None:
        advertised = response.headers.get(BULK_URL_HEADER)
        if advertised is None and not clear_if_absent:
            return
        if advertised is not None and not advertised.startswith(("http://", "https://")):
            advertised = None
        with self._lock:
            self._bulk_url = advertised.rstrip("/") if advertised else None

    @staticmethod
    def _json(response: Response, path: str) -> Dict[str, Any]:
        try:
            body = response.json()
        except ValueError as error:
            raise ProtocolError(f"{path} did not return JSON: {error}") from None
        if not isinstance(body, dict):
            raise ProtocolError(f"{path} returned {type(body).__name__}, expected an object")
        return body

    @staticmethod
    def _params(response: Response, path: str) -> ParamsBlob:
        round_header = response.headers.get(ROUND_HEADER)
        try:
            round_number = int(round_header) if round_header is not None else None
        except ValueError:
            round_number = None
        if round_number is None:
            raise ProtocolError(f"{path} returned no valid {ROUND_HEADER} header")
        return ParamsBlob(round=round_number, data=response.content)


def _ssl_context(credentials: Credentials) -> ssl.SSLContext:
    """System roots plus the credentials' CA bundle, and the client certificate if any."""
    context = ssl.create_default_context()
    try:
        if credentials.ca_file is not None:
            context.load_verify_locations(cafile=str(credentials.ca_file))
        if credentials.client_cert is not None and credentials.client_key is not None:
            context.load_cert_chain(str(credentials.client_cert), str(credentials.client_key))
    except (OSError, ssl.SSLError) as error:
        # Names the files, never their content (the key).
        raise ConfigurationError(
            f"cannot load TLS files (CA {credentials.ca_file}, certificate "
            f"{credentials.client_cert}, key {credentials.client_key}): "
            f"{getattr(error, 'strerror', None) or type(error).__name__}"
        ) from None
    return context
