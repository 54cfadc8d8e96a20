"""Where the coordinator is and how to prove who we are.

The operator publishes a worker's credentials in a Secret that is mounted as a directory:

============== =========================================================================
``token``       the bearer token (absent when the server runs without authentication, and
                in a named client's bundle); replaced in place when the token is rotated
``ca.crt``      the CA bundle that signed the coordinator's certificate (TLS only)
``tls.crt``     a client certificate (only in the Secrets of named clients,
``tls.key``     ``spec.tls.clients``); it authenticates without a token, for worker ids
                equal to its name or starting with ``<name>.``
``endpoints.json`` ``{"control": "https://llm-control.ml.svc:8512", "bulk": "…" | null}``
============== =========================================================================

:meth:`Credentials.from_dir` reads exactly that layout; :meth:`Credentials.from_env` reads the
same settings from ``DILOCO_*`` variables (the names the Rust client uses). The token itself is
never stored in a repr, a log line or an exception message.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from .errors import ConfigurationError

# Keys of the operator's worker credential Secret (see the module docstring) and the
# environment variables read by :meth:`Credentials.from_env`, from :mod:`diloco.protocol`.
from .protocol import (
    CA_CERT_KEY,
    CLIENT_CERT_KEY,
    CLIENT_KEY_KEY,
    ENDPOINTS_KEY,
    ENV_CA_FILE,
    ENV_CLIENT_CERT,
    ENV_CLIENT_KEY,
    ENV_CREDENTIALS_DIR,
    ENV_TOKEN,
    ENV_TOKEN_FILE,
    ENV_URL,
    TOKEN_KEY,
)

PathLike = Union[str, "os.PathLike[str]"]


@dataclasses.dataclass(frozen=True)
class Credentials:
    """How to reach and authenticate with a coordinator.

    Attributes:
        url: base URL of the control plane, e.g. ``https://llm-control.ml.svc:8512``.
        bulk_url: the bulk plane from ``endpoints.json``, for information: the worker sends
            tensors wherever the coordinator advertises at registration.
        token_file: file holding the bearer token; re-read when the coordinator answers 401,
            so a rotated Secret is picked up without a restart.
        ca_file: CA bundle (PEM) trusted for an ``https`` coordinator, besides the system's.
        client_cert: client certificate (PEM); one the coordinator's CA signed
            authenticates without a token.
        client_key: the client certificate's private key (PEM).
    """

    url: str
    bulk_url: Optional[str] = None
    token_file: Optional[Path] = None
    ca_file: Optional[Path] = None
    client_cert: Optional[Path] = None
    client_key: Optional[Path] = None
    # A literal token (DILOCO_TOKEN or the constructor); never shown.
    _token: Optional[str] = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        url = self.url.strip().rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"coordinator URL {url!r} must start with http:// or https://")
        object.__setattr__(self, "url", url)
        if (self.client_cert is None) != (self.client_key is None):
            raise ConfigurationError(
                "a client certificate needs both tls.crt and tls.key (client_cert and client_key)"
            )
        for name in ("token_file", "ca_file", "client_cert", "client_key"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))

    @classmethod
    def with_token(cls, url: str, token: str, **kwargs: object) -> "Credentials":
        """Credentials with a literal token (prefer a token file: it follows rotations)."""
        return cls(url=url, _token=token.strip(), **kwargs)  # type: ignore[arg-type]

    @classmethod
    def from_dir(cls, path: PathLike, url: Optional[str] = None) -> "Credentials":
        """Reads a mounted worker credential Secret (the layout in the module docstring).

        Args:
            path: the directory the Secret is mounted at.
            url: the control-plane URL, overriding ``endpoints.json`` (e.g. when the worker
                reaches the coordinator through a LoadBalancer address).

        Raises:
            ConfigurationError: the directory is missing, ``endpoints.json`` is malformed or
                absent without ``url``, or only one of ``tls.crt``/``tls.key`` is present.
        """
        root = Path(path)
        if not root.is_dir():
            raise ConfigurationError(f"credentials directory {root} does not exist")
        endpoints = _read_endpoints(root / ENDPOINTS_KEY)
        control = url or endpoints.get("control")
        if not control:
            raise ConfigurationError(f"{root} has no {ENDPOINTS_KEY} with a control URL; pass url=")
        cert, key = root / CLIENT_CERT_KEY, root / CLIENT_KEY_KEY
        if cert.exists() != key.exists():
            raise ConfigurationError(
                f"{root} has only one of {CLIENT_CERT_KEY} and {CLIENT_KEY_KEY}"
            )
        token = root / TOKEN_KEY
        ca = root / CA_CERT_KEY
        return cls(
            url=control,
            bulk_url=endpoints.get("bulk"),
            token_file=token if token.exists() else None,
            ca_file=ca if ca.exists() else None,
            client_cert=cert if cert.exists() else None,
            client_key=key if key.exists() else None,
        )

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> "Credentials":
        """Reads ``DILOCO_*`` variables.

        ``DILOCO_CREDENTIALS_DIR`` names a mounted Secret (read with :meth:`from_dir`); the
        others override or replace it: ``DILOCO_URL``, ``DILOCO_TOKEN_FILE`` (preferred) or
        ``DILOCO_TOKEN``, ``DILOCO_CA_FILE``, ``DILOCO_CLIENT_CERT`` and ``DILOCO_CLIENT_KEY``.

        Raises:
            ConfigurationError: no URL is configured, or the named directory is missing.
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> Optional[str]:
            value = env.get(name, "").strip()
            return value or None

        base: Optional[Credentials] = None
        directory = get(ENV_CREDENTIALS_DIR)
        if directory:
            base = cls.from_dir(directory, url=get(ENV_URL))
        url = get(ENV_URL) or (base.url if base else None)
        if not url:
            raise ConfigurationError(
                f"no coordinator URL: set {ENV_URL} or {ENV_CREDENTIALS_DIR} (a directory with "
                f"{ENDPOINTS_KEY})"
            )
        token_file: Optional[Path] = base.token_file if base else None
        literal: Optional[str] = None
        if get(ENV_TOKEN_FILE):
            token_file = Path(get(ENV_TOKEN_FILE) or "")
        elif get(ENV_TOKEN):
            token_file, literal = None, get(ENV_TOKEN)
        ca_file = (
            Path(get(ENV_CA_FILE) or "") if get(ENV_CA_FILE) else (base.ca_file if base else None)
        )
        client_cert = base.client_cert if base else None
        client_key = base.client_key if base else None
        if get(ENV_CLIENT_CERT) or get(ENV_CLIENT_KEY):
            # Both or neither: a half-given pair is refused by __post_init__.
            cert, key = get(ENV_CLIENT_CERT), get(ENV_CLIENT_KEY)
            client_cert = Path(cert) if cert else None
            client_key = Path(key) if key else None
        return cls(
            url=url,
            bulk_url=base.bulk_url if base else None,
            token_file=token_file,
            ca_file=ca_file,
            client_cert=client_cert,
            client_key=client_key,
            _token=literal,
        )

    def with_url(self, url: str) -> "Credentials":
        """The same credentials for another control-plane URL."""
        return dataclasses.replace(self, url=url)

    @property
    def has_token(self) -> bool:
        """Whether a bearer token is configured (literal or file)."""
        return self._token is not None or self.token_file is not None

    def read_token(self) -> Optional[str]:
        """The current token: the literal one, or the token file's content (re-read on every
        call, surrounding whitespace removed); ``None`` without a token.

        Raises:
            ConfigurationError: the token file cannot be read or is empty.
        """
        if self._token is not None:
            return self._token
        if self.token_file is None:
            return None
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ConfigurationError(
                f"cannot read the token file {self.token_file}: {error.strerror or error}"
            ) from None
        if not token:
            raise ConfigurationError(f"the token file {self.token_file} is empty")
        return token

    def describe_token(self) -> str:
        """Where the token comes from, for messages (never the token)."""
        if self.token_file is not None:
            return f"token file {self.token_file}"
        if self._token is not None:
            return f"the token given directly ({ENV_TOKEN} or Credentials.with_token)"
        return (
            "no token (and no client certificate)"
            if self.client_cert is None
            else "client certificate"
        )

    def __repr__(self) -> str:
        fields = [f"url={self.url!r}"]
        if self.bulk_url:
            fields.append(f"bulk_url={self.bulk_url!r}")
        if self.token_file is not None:
            fields.append(f"token_file={str(self.token_file)!r}")
        if self._token is not None:
            fields.append("token=<redacted>")
        for name in ("ca_file", "client_cert", "client_key"):
            value = getattr(self, name)
            if value is not None:
                fields.append(f"{name}={str(value)!r}")
        return f"Credentials({', '.join(fields)})"

    __str__ = __repr__


def _read_endpoints(path: Path) -> Dict[str, Any]:
    if not path.exists():
        return {}
    try:
        endpoints = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"cannot read {path}: {error}") from None
    if not isinstance(endpoints, dict) or not isinstance(endpoints.get("control"), str):
        raise ConfigurationError(f'{path} must be {{"control": URL, "bulk": URL or null}}')
    bulk = endpoints.get("bulk")
    if bulk is not None and not isinstance(bulk, str):
        raise ConfigurationError(f"{path}: bulk must be a URL or null")
    return endpoints
