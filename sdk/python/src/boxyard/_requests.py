"""What the SDK sends: the request bodies (only fields the API knows, None ones left out), and the description of a
call that the sync and async transports both carry out (with the same retry rules, in ``_retry``)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)
from urllib.parse import quote

from ._models import Quota, SnapshotMetadata, TtySize

__all__ = [
    "Call",
    "CREATE_BOX_FIELDS",
    "CREATE_EXECUTION_FIELDS",
    "create_box_body",
    "create_execution_body",
    "create_snapshot_body",
    "create_key_body",
    "argv",
    "seg",
]

Command = Union[str, Sequence[str], None]
"""A command: an argv list, a string (run with ``sh -c``), or None (the snapshot's default command)."""

# The fields of CreateBox and CreateExecution (docs/api.md). The tests compare them with the live OpenAPI document.
CREATE_BOX_FIELDS: Tuple[str, ...] = (
    "name",
    "snapshot",
    "vcpus",
    "memory_mib",
    "disk_mib",
    "env",
    "labels",
    "runner_selector",
    "auto_stop_seconds",
    "ttl_seconds",
)
CREATE_EXECUTION_FIELDS: Tuple[str, ...] = ("command", "env", "working_dir", "user", "tty", "stdin", "timeout_ms")


def seg(value: str) -> str:
    """An id as a path segment (escaped, so that no id can change the path)."""
    return quote(str(value), safe="")


def argv(command: Command) -> Optional[List[str]]:
    """The argv of a command: a string runs with ``sh -c``; None means the snapshot's default command."""
    if command is None:
        return None
    if isinstance(command, str):
        return ["sh", "-c", command]
    if isinstance(command, (bytes, bytearray)):
        raise TypeError("a command is a list of strings or a string, not bytes")
    out = [str(a) for a in command]
    return out


def _strmap(name: str, m: Optional[Mapping[str, str]]) -> Optional[Dict[str, str]]:
    if m is None:
        return None
    if not isinstance(m, Mapping):
        raise TypeError(f"{name} must be a mapping of strings to strings")
    return {str(k): str(v) for k, v in m.items()}


def _int(name: str, v: Optional[int]) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an integer")
    return v


def create_box_body(
    *,
    name: Optional[str] = None,
    snapshot: Optional[str] = None,
    vcpus: Optional[int] = None,
    memory_mib: Optional[int] = None,
    disk_mib: Optional[int] = None,
    env: Optional[Mapping[str, str]] = None,
    labels: Optional[Mapping[str, str]] = None,
    runner_selector: Optional[Mapping[str, str]] = None,
    auto_stop_seconds: Optional[int] = None,
    ttl_seconds: Optional[int] = None,
) -> Dict[str, Any]:
    """The ``CreateBox`` body (None fields omitted)."""
    body: Dict[str, Any] = {
        "name": name,
        "snapshot": snapshot,
        "vcpus": _int("vcpus", vcpus),
        "memory_mib": _int("memory_mib", memory_mib),
        "disk_mib": _int("disk_mib", disk_mib),
        "env": _strmap("env", env),
        "labels": _strmap("labels", labels),
        "runner_selector": _strmap("runner_selector", runner_selector),
        "auto_stop_seconds": _int("auto_stop_seconds", auto_stop_seconds),
        "ttl_seconds": _int("ttl_seconds", ttl_seconds),
    }
    return {k: v for k, v in body.items() if v is not None}


def timeout_ms(timeout: Optional[float]) -> Optional[int]:
    """A timeout in seconds as the API's ``timeout_ms`` (at least 1 ms)."""
    if timeout is None:
        return None
    if timeout <= 0:
        raise ValueError("timeout must be positive (seconds)")
    return max(1, int(round(timeout * 1000)))


def create_execution_body(
    *,
    command: Command = None,
    env: Optional[Mapping[str, str]] = None,
    working_dir: Optional[str] = None,
    user: Optional[str] = None,
    tty: Optional[TtySize] = None,
    stdin: bool = False,
    timeout_ms: Optional[int] = None,
) -> Dict[str, Any]:
    """The ``CreateExecution`` body (None fields omitted)."""
    body: Dict[str, Any] = {
        "command": argv(command),
        "env": _strmap("env", env),
        "working_dir": working_dir,
        "user": user,
        "tty": tty.to_json() if tty is not None else None,
        "stdin": True if stdin else None,
        "timeout_ms": _int("timeout_ms", timeout_ms),
    }
    return {k: v for k, v in body.items() if v is not None}


def create_snapshot_body(
    name: str,
    *,
    metadata: Optional[SnapshotMetadata] = None,
    public: bool = False,
    source: Optional[Tuple[str, str]] = None,
) -> Dict[str, Any]:
    """The ``CreateSnapshot`` body; ``source`` is ``(key, digest)`` of an object already in the bucket."""
    body: Dict[str, Any] = {"name": name}
    if public:
        body["public"] = True
    if metadata is not None:
        body["metadata"] = metadata.to_json()
    if source is not None:
        key, digest = source
        body["source"] = {"key": key, "digest": digest}
    return body


def create_key_body(name: str, role: Optional[str] = None) -> Dict[str, Any]:
    """The ``CreateKey`` body."""
    body: Dict[str, Any] = {"name": name}
    if role is not None:
        body["role"] = role
    return body


def create_org_body(name: str, quota: Optional[Quota] = None) -> Dict[str, Any]:
    """The ``CreateOrg`` body."""
    body: Dict[str, Any] = {"name": name}
    if quota is not None:
        body["quota"] = quota.to_json()
    return body


def encode_json(body: Any) -> bytes:
    """A JSON body, compact (a retry sends exactly these bytes again)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass
class Call:
    """One API call, as the transports carry it out.

    ``content`` is a factory so that a retry can send the body again (a generator is made anew for each attempt).
    """

    method: str
    path: str
    params: Optional[Dict[str, Any]] = None
    json: Any = None
    content: Optional[Callable[[], Union[bytes, Iterator[bytes]]]] = None
    # The async client's streamed body (an async iterator), made anew for each attempt.
    acontent: Optional[Callable[[], AsyncIterator[bytes]]] = None
    content_type: Optional[str] = None
    idempotency_key: Optional[str] = None
    # Safe to send again after a response was lost (the call is idempotent, or carries an Idempotency-Key).
    replay_safe: bool = False
    # A DELETE that is done if a retry after a lost response finds the object gone (404).
    gone_is_done: bool = False
    # Retry answers the API marks retryable (503 with retry_after, 409 request_in_progress, 429 runner_busy).
    retry_answers: bool = True
    headers: Dict[str, str] = field(default_factory=dict)
    _encoded: Optional[bytes] = field(default=None, repr=False)

    def body_bytes(self) -> Optional[bytes]:
        """The JSON body, encoded once (every attempt sends the same bytes)."""
        if self.json is None:
            return None
        if self._encoded is None:
            self._encoded = encode_json(self.json)
        return self._encoded

    def request_headers(self) -> Dict[str, str]:
        """The headers of every attempt of this call."""
        h = dict(self.headers)
        if self.json is not None:
            h["content-type"] = "application/json"
        elif self.content_type is not None:
            h["content-type"] = self.content_type
        if self.idempotency_key is not None:
            h["idempotency-key"] = self.idempotency_key
        return h


def get(path: str, params: Optional[Dict[str, Any]] = None) -> Call:
    """A GET (always safe to repeat)."""
    return Call("GET", path, params=params, replay_safe=True)


def post(path: str, body: Any = None, *, replay_safe: bool = False) -> Call:
    """A POST with a JSON body (an empty object when None: the API reads an empty body as ``{}``)."""
    return Call("POST", path, json=body if body is not None else {}, replay_safe=replay_safe)


def create(path: str, body: Any, params: Optional[Dict[str, Any]] = None) -> Call:
    """A create that carries an ``Idempotency-Key`` (a uuid4, the same on every retry of this call)."""
    return Call("POST", path, params=params, json=body, idempotency_key=str(uuid.uuid4()), replay_safe=True)


def delete(path: str, *, gone_is_done: bool = True) -> Call:
    """A DELETE."""
    return Call("DELETE", path, replay_safe=True, gone_is_done=gone_is_done)


def put_json(path: str, body: Any) -> Call:
    """A PUT with a JSON body (idempotent)."""
    return Call("PUT", path, json=body, replay_safe=True)


def label_param(label: Union[str, Tuple[str, str], None]) -> Optional[str]:
    """The ``label`` query of a box list: ``"key=value"`` or ``(key, value)``."""
    if label is None:
        return None
    if isinstance(label, tuple):
        k, v = label
        return f"{k}={v}"
    if "=" not in label:
        raise ValueError("label must be 'key=value' or a (key, value) tuple")
    return label


def chunks_of(data: bytes, size: int) -> Iterable[bytes]:
    """``data`` in pieces of at most ``size`` bytes."""
    for i in range(0, len(data), size):
        yield data[i : i + size]
