"""Boxyard's Python SDK: run untrusted code in microVM boxes.

A sync client (:class:`Client`) and an asyncio client (:class:`AsyncClient`) with the same surface::

    import boxyard

    with boxyard.Client() as client, client.boxes.create("base") as box:
        result = box.run("echo hello")
        print(result.stdout, result.exit_code)

With no arguments the clients read ``BOXYARD_URL``/``BOXYARD_KEY``, else the CLI's default profile.
Executions stream their output over a WebSocket that resumes from its cursor after any cut, so output and input are
delivered exactly once. Errors of the API are :class:`ApiError` subclasses carrying the API's ``code``.
"""

from __future__ import annotations

from ._async import (
    AsyncAdmin,
    AsyncBox,
    AsyncBoxes,
    AsyncClient,
    AsyncExecution,
    AsyncFiles,
    AsyncKeys,
    AsyncSnapshots,
    BoxCreation,
)
from ._config import profiles_path
from ._errors import (
    ApiError,
    AttachError,
    BoxyardError,
    ConfigError,
    ConflictError,
    ForbiddenError,
    InvalidRequestError,
    NotFoundError,
    ProtocolError,
    QuotaExceededError,
    RateLimitedError,
    ServerError,
    TransportError,
    UnauthorizedError,
    UnavailableError,
    UnsafeArchiveError,
    WaitTimeout,
)
from ._models import (
    STDERR,
    STDOUT,
    AuditEntry,
    BoxInfo,
    ExecutionInfo,
    ExecutionResult,
    JoinToken,
    Key,
    Me,
    Org,
    OutputChunk,
    PlatformConfig,
    Quota,
    Runner,
    Snapshot,
    SnapshotMetadata,
    TtySize,
    UploadResult,
)
from ._sync import Admin, Box, Boxes, Client, Execution, Files, Keys, Snapshots
from ._version import VERSION

__version__ = VERSION
"""The SDK's version."""

__all__ = [
    # clients
    "Client",
    "AsyncClient",
    # sync resources
    "Boxes",
    "Box",
    "Execution",
    "Files",
    "Snapshots",
    "Keys",
    "Admin",
    # async resources
    "AsyncBoxes",
    "AsyncBox",
    "BoxCreation",
    "AsyncExecution",
    "AsyncFiles",
    "AsyncSnapshots",
    "AsyncKeys",
    "AsyncAdmin",
    # values
    "BoxInfo",
    "ExecutionInfo",
    "ExecutionResult",
    "OutputChunk",
    "STDOUT",
    "STDERR",
    "TtySize",
    "Snapshot",
    "SnapshotMetadata",
    "Key",
    "Quota",
    "Org",
    "Runner",
    "JoinToken",
    "AuditEntry",
    "Me",
    "PlatformConfig",
    "UploadResult",
    # errors
    "BoxyardError",
    "ConfigError",
    "TransportError",
    "ProtocolError",
    "AttachError",
    "WaitTimeout",
    "UnsafeArchiveError",
    "ApiError",
    "InvalidRequestError",
    "UnauthorizedError",
    "ForbiddenError",
    "NotFoundError",
    "ConflictError",
    "QuotaExceededError",
    "RateLimitedError",
    "ServerError",
    "UnavailableError",
    # misc
    "profiles_path",
    "__version__",
]
