"""DiLoCo worker SDK: train any PyTorch model with a diloco-operator coordinator.

>>> from diloco import Credentials, DiLoCoWorker
>>> worker = DiLoCoWorker(model, optimizer, credentials=Credentials.from_dir("/var/run/diloco"))
>>> # after every optimizer.step():
>>> worker.step()

See the README for a complete training loop.
"""

from .client import CoordinatorClient
from .credentials import Credentials
from .errors import (
    AuthenticationError,
    ConfigurationError,
    CoordinatorRefused,
    CoordinatorUnreachable,
    DiLoCoError,
    GaveUpError,
    ModelMismatchError,
    ProtocolError,
    RateLimitedError,
    WorkerIdConflictError,
)
from .messages import ParamsBlob, ServerSettings
from .retry import RetryPolicy
from .wire import Frame, WireDtype, encode_frame
from .worker import DiLoCoWorker, SyncReport

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "ConfigurationError",
    "CoordinatorClient",
    "CoordinatorRefused",
    "CoordinatorUnreachable",
    "Credentials",
    "DiLoCoError",
    "DiLoCoWorker",
    "Frame",
    "GaveUpError",
    "ModelMismatchError",
    "ParamsBlob",
    "ProtocolError",
    "RateLimitedError",
    "RetryPolicy",
    "ServerSettings",
    "SyncReport",
    "WireDtype",
    "WorkerIdConflictError",
    "encode_frame",
]
