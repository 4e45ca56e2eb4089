"""The API's objects as Python values (immutable dataclasses), and what the SDK itself returns.

Every view keeps the JSON it was read from in ``raw`` (fields a newer server added are there too).
"""

from __future__ import annotations

import codecs
import dataclasses
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Type, TypeVar, Union

__all__ = [
    "BoxInfo",
    "ExecutionInfo",
    "ExecutionResult",
    "OutputChunk",
    "TtySize",
    "SnapshotMetadata",
    "Snapshot",
    "Key",
    "Quota",
    "Org",
    "Runner",
    "JoinToken",
    "AuditEntry",
    "Me",
    "PlatformConfig",
    "UploadResult",
    "STDOUT",
    "STDERR",
]

STDOUT = "stdout"
"""The ``stream`` of output the process wrote to its stdout (all output of a tty execution)."""
STDERR = "stderr"
"""The ``stream`` of output the process wrote to its stderr."""

_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$", re.IGNORECASE)


def parse_time(value: str) -> datetime:
    """An RFC 3339 time (as the API writes them: UTC, any number of fraction digits) as an aware datetime."""
    m = _TIME.match(value.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 time: {value!r}")
    base, frac, tz = m.groups()
    dt = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S")
    if frac:
        dt = dt.replace(microsecond=int((frac + "000000")[:6]))
    if tz is None or tz.upper() == "Z":
        offset = timezone.utc
    else:
        sign = 1 if tz[0] == "+" else -1
        offset = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
    return dt.replace(tzinfo=offset)


T = TypeVar("T")


def _opt(conv: Callable[[Any], T]) -> Callable[[Any], Optional[T]]:
    def f(v: Any) -> Optional[T]:
        return None if v is None else conv(v)

    return f


def _strmap(v: Any) -> Dict[str, str]:
    return {str(k): str(x) for k, x in (v or {}).items()}


_time = _opt(parse_time)


def _build(cls: Type[T], d: Mapping[str, Any], conv: Mapping[str, Callable[[Any], Any]]) -> T:
    """An instance of the dataclass ``cls`` from JSON object ``d``: each field from the key of its name, through
    ``conv`` where given; ``raw`` keeps ``d``."""
    kwargs: Dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name == "raw":
            kwargs["raw"] = dict(d)
            continue
        if f.name not in d:
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
                continue
            v: Any = None
        else:
            v = d[f.name]
        c = conv.get(f.name)
        kwargs[f.name] = c(v) if c is not None else v
    return cls(**kwargs)


@dataclass(frozen=True)
class TtySize:
    """A terminal size."""

    rows: int
    """Lines, 1 to 10000."""
    cols: int
    """Columns, 1 to 10000."""

    def to_json(self) -> Dict[str, int]:
        """The JSON of the API (``{"rows", "cols"}``)."""
        return {"rows": int(self.rows), "cols": int(self.cols)}


@dataclass(frozen=True)
class BoxInfo:
    """A box as the API shows it (``BoxView``). A :class:`~boxyard.Box` exposes these as its attributes."""

    id: str
    """The box's id."""
    name: Optional[str]
    """Its label for humans."""
    snapshot: Optional[str]
    """The snapshot it boots (None: the runner's default image)."""
    vcpus: int
    """Its vCPUs."""
    memory_mib: int
    """Its memory, MiB."""
    disk_mib: int
    """Its writable disk, MiB."""
    env: Dict[str, str]
    """Environment of every execution in the box."""
    labels: Dict[str, str]
    """The labels given at creation."""
    runner_selector: Dict[str, str]
    """The runner labels the box was placed by."""
    state: str
    """``pending``, ``starting``, ``running``, ``stopping``, ``stopped``, ``error`` or ``lost``."""
    desired_state: str
    """``running`` or ``stopped``: what was asked."""
    reason: Optional[str]
    """Why the box is in its state (error, lost, stopped by the platform)."""
    runner_id: Optional[str]
    """The runner's id (useful in support requests)."""
    auto_stop_seconds: Optional[int]
    """Stop after this many idle seconds (None: never)."""
    ttl_seconds: Optional[int]
    """Deleted this many seconds after creation (None: never)."""
    created_at: datetime
    """When it was created."""
    updated_at: datetime
    """When it last changed."""
    started_at: Optional[datetime]
    """When it last started running."""
    stopped_at: Optional[datetime]
    """When it last stopped."""
    last_activity_at: Optional[datetime]
    """The last activity that postpones auto-stop."""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The JSON the API returned."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "BoxInfo":
        """Reads a ``BoxView``."""
        return _build(
            cls,
            d,
            {
                "id": str,
                "env": _strmap,
                "labels": _strmap,
                "runner_selector": _strmap,
                "runner_id": _opt(str),
                "created_at": parse_time,
                "updated_at": parse_time,
                "started_at": _time,
                "stopped_at": _time,
                "last_activity_at": _time,
            },
        )


@dataclass(frozen=True)
class ExecutionInfo:
    """An execution as the API shows it (``ExecutionView``)."""

    id: str
    """The execution's id."""
    box_id: str
    """The box it runs in."""
    command: List[str]
    """Its argv (the snapshot's default command when none was given)."""
    env: Dict[str, str]
    """Its own environment (as requested)."""
    working_dir: Optional[str]
    """Its working directory, if one was set."""
    user: Optional[str]
    """Its user, if one was set."""
    tty: bool
    """Whether it runs on a pseudo-terminal."""
    stdin: bool
    """Whether its stdin is open for attaches."""
    timeout_ms: Optional[int]
    """Its timeout, if any."""
    state: str
    """``running``, ``finished`` or ``lost``."""
    exit_code: Optional[int]
    """The exit code, if the process exited."""
    signal: Optional[str]
    """The signal that killed it (e.g. ``"SIGKILL"``)."""
    timed_out: bool
    """Whether its timeout killed it."""
    killed: bool
    """Whether ``kill`` killed it."""
    error: Optional[str]
    """Why it could not run or finish normally."""
    output_start: int
    """The oldest cursor still stored."""
    output_bytes: int
    """The cursor after the last output byte stored so far."""
    created_at: datetime
    """When it was created."""
    finished_at: Optional[datetime]
    """When its result became known."""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The JSON the API returned."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ExecutionInfo":
        """Reads an ``ExecutionView``."""
        return _build(
            cls,
            d,
            {
                "id": str,
                "box_id": str,
                "command": lambda v: [str(x) for x in (v or [])],
                "env": _strmap,
                "tty": bool,
                "stdin": bool,
                "timed_out": bool,
                "killed": bool,
                "output_start": lambda v: int(v or 0),
                "output_bytes": lambda v: int(v or 0),
                "created_at": parse_time,
                "finished_at": _time,
            },
        )


@dataclass(frozen=True)
class OutputChunk:
    """A piece of an execution's output, as an attach delivers it."""

    stream: str
    """``"stdout"`` or ``"stderr"`` (a tty execution's output is all ``"stdout"``)."""
    data: bytes
    """The bytes."""
    cursor: int
    """The cursor of the first byte: its position in the execution's combined output."""

    @property
    def end(self) -> int:
        """The cursor after the last byte (where a new attach would resume)."""
        return self.cursor + len(self.data)

    @property
    def text(self) -> str:
        """The bytes decoded as UTF-8 with replacement (a character split across chunks is replaced here: decode
        the whole stream, or use an incremental decoder, for exact text)."""
        return self.data.decode("utf-8", "replace")


@dataclass(frozen=True)
class ExecutionResult:
    """How an execution ended, with the output that was collected."""

    execution_id: str
    """The execution's id."""
    exit_code: Optional[int]
    """The process's exit code (None when it was killed by a signal or could not run)."""
    signal: Optional[str]
    """The signal that killed it (e.g. ``"SIGKILL"``), if any."""
    timed_out: bool
    """Whether its timeout killed it."""
    killed: bool
    """Whether ``kill`` killed it."""
    error: Optional[str]
    """Why it could not run or finish normally (e.g. the command does not exist)."""
    stdout_bytes: bytes
    """Everything collected from stdout, raw."""
    stderr_bytes: bytes
    """Everything collected from stderr, raw."""
    output_end: int
    """The cursor after the last output byte."""
    gaps: Tuple[Tuple[int, int], ...] = ()
    """Cursor ranges ``[from, to)`` dropped by the runner's retention before they could be read (normally none)."""

    @property
    def stdout(self) -> str:
        """stdout decoded as UTF-8 (invalid bytes replaced by U+FFFD)."""
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        """stderr decoded as UTF-8 (invalid bytes replaced by U+FFFD)."""
        return self.stderr_bytes.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        """Whether the process exited with status 0."""
        return self.exit_code == 0


@dataclass(frozen=True)
class SnapshotMetadata:
    """Defaults for executions in boxes of a snapshot (an execution's own settings win)."""

    cmd: List[str] = field(default_factory=list)
    """The default command (argv) of an execution that gives none; empty: none."""
    env: Dict[str, str] = field(default_factory=dict)
    """Environment of every execution (the box's and the execution's own win)."""
    working_dir: Optional[str] = None
    """Default working directory."""
    user: Optional[str] = None
    """Default user (a name in the image, a uid, or uid:gid)."""

    def to_json(self) -> Dict[str, Any]:
        """The JSON of the API (fields left at their defaults are omitted)."""
        out: Dict[str, Any] = {}
        if self.cmd:
            out["cmd"] = list(self.cmd)
        if self.env:
            out["env"] = dict(self.env)
        if self.working_dir is not None:
            out["working_dir"] = self.working_dir
        if self.user is not None:
            out["user"] = self.user
        return out

    @classmethod
    def from_json(cls, d: Optional[Mapping[str, Any]]) -> "SnapshotMetadata":
        """Reads a ``SnapshotMetadata``."""
        d = d or {}
        return cls(
            cmd=[str(x) for x in (d.get("cmd") or [])],
            env=_strmap(d.get("env")),
            working_dir=d.get("working_dir"),
            user=d.get("user"),
        )


@dataclass(frozen=True)
class Snapshot:
    """A root filesystem image that boxes boot from (``SnapshotView``)."""

    id: str
    """The snapshot's id."""
    name: str
    """Its name, unique in its org."""
    org_id: Optional[str]
    """Its org (None: published to every org)."""
    state: str
    """``uploading``, ``verifying``, ``active`` or ``failed``."""
    reason: Optional[str]
    """Why it failed."""
    digest: Optional[str]
    """``sha256:<hex>`` of the image, once stored."""
    size_bytes: Optional[int]
    """The image's size, once stored."""
    metadata: SnapshotMetadata
    """Defaults for executions in its boxes."""
    created_at: datetime
    """When it was registered."""
    updated_at: datetime
    """When it last changed."""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The JSON the API returned."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Snapshot":
        """Reads a ``SnapshotView``."""
        return _build(
            cls,
            d,
            {
                "id": str,
                "org_id": _opt(str),
                "metadata": SnapshotMetadata.from_json,
                "created_at": parse_time,
                "updated_at": parse_time,
            },
        )


@dataclass(frozen=True)
class Key:
    """An API key (``KeyView``); ``secret`` only in the answer of its creation."""

    id: str
    """The key's id."""
    org_id: str
    """Its org."""
    name: str
    """Its label."""
    prefix: str
    """Its visible prefix (``byk_<12 hex>``)."""
    role: str
    """``member``, ``admin`` or ``platform_admin``."""
    created_at: datetime
    """When it was created."""
    last_used_at: Optional[datetime]
    """When it last authenticated a request (updated at most once a minute)."""
    revoked_at: Optional[datetime]
    """When it was revoked."""
    secret: Optional[str] = field(default=None, repr=False)
    """The whole key: shown once, when it is created. Store it now."""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The JSON the API returned."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Key":
        """Reads a ``KeyView`` or ``KeyCreated``."""
        return _build(
            cls,
            d,
            {
                "id": str,
                "org_id": str,
                "created_at": parse_time,
                "last_used_at": _time,
                "revoked_at": _time,
            },
        )


@dataclass(frozen=True)
class Quota:
    """An org's limits: totals over its active boxes, and the largest box."""

    max_boxes: int
    """Boxes that are not stopped (pending, starting, running, stopping)."""
    max_vcpus: int
    """Sum of the vCPUs of those boxes."""
    max_memory_mib: int
    """Sum of their memory, MiB."""
    max_box_vcpus: int
    """Largest box: vCPUs."""
    max_box_memory_mib: int
    """Largest box: memory, MiB."""
    max_box_disk_mib: int
    """Largest box: writable disk, MiB."""

    def to_json(self) -> Dict[str, int]:
        """The JSON of the API (all six fields)."""
        return {f.name: int(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Quota":
        """Reads a ``Quota``."""
        return cls(**{f.name: int(d[f.name]) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Org:
    """An org (``OrgView``)."""

    id: str
    """The org's id."""
    name: str
    """Its unique name."""
    created_at: datetime
    """When it was created."""
    quota: Quota
    """Its limits."""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The JSON the API returned."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Org":
        """Reads an ``OrgView``."""
        return _build(cls, d, {"id": str, "created_at": parse_time, "quota": Quota.from_json})


@dataclass(frozen=True)
class Runner:
    """A runner of the fleet (``RunnerView``)."""

    id: str
    """The runner's id."""
    name: str
    """Its unique name."""
    address: str
    """Where the control plane reaches it."""
    state: str
    """``ready``, ``unresponsive`` or ``lost``."""
    draining: bool
    """Draining: no new boxes, before maintenance."""
    cordoned: bool
    """Cordoned: no new boxes."""
    labels: Dict[str, str]
    """Its labels (matched by ``runner_selector``)."""
    capacity_vcpus: int
    """vCPUs it offers."""
    capacity_memory_mib: int
    """Memory it offers, MiB."""
    capacity_disk_mib: int
    """Disk it offers, MiB."""
    allocated_vcpus: int
    """vCPUs reserved by its boxes."""
    allocated_memory_mib: int
    """Memory reserved by its boxes, MiB."""
    boxes: int
    """Boxes placed there (not deleted), as last reported."""
    running_boxes: int
    """Of which running."""
    version: str
    """The runner's version."""
    backend: str
    """Its VM backend (``qemu``, ``local``)."""
    registered_at: datetime
    """When it first registered."""
    last_heartbeat_at: datetime
    """When its last heartbeat arrived."""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The JSON the API returned."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Runner":
        """Reads a ``RunnerView``."""
        return _build(
            cls,
            d,
            {"id": str, "labels": _strmap, "registered_at": parse_time, "last_heartbeat_at": parse_time},
        )


@dataclass(frozen=True)
class JoinToken:
    """A runner join token (``JoinTokenView``); ``secret`` only in the answer of its creation."""

    id: str
    """The token's id."""
    prefix: str
    """Its visible prefix."""
    description: str
    """What it is for."""
    created_at: datetime
    """When it was issued."""
    expires_at: datetime
    """When it stops working."""
    revoked_at: Optional[datetime]
    """When it was revoked."""
    uses: int
    """Runners registered with it."""
    secret: Optional[str] = field(default=None, repr=False)
    """The token (``byj_...``), for ``boxyard-runner serve --join-token``. Shown once."""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The JSON the API returned."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "JoinToken":
        """Reads a ``JoinTokenView`` or ``JoinTokenCreated``."""
        return _build(cls, d, {"id": str, "created_at": parse_time, "expires_at": parse_time, "revoked_at": _time})


@dataclass(frozen=True)
class AuditEntry:
    """One admin action of the audit log."""

    id: int
    """Increasing with time."""
    at: datetime
    """When it happened."""
    actor_key: Optional[str]
    """The key that acted."""
    actor_org: Optional[str]
    """That key's org."""
    action: str
    """What was done (``org.create``, ``key.revoke``, ...)."""
    target: str
    """What it was done to."""
    details: Any
    """The action's parameters (JSON)."""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The JSON the API returned."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "AuditEntry":
        """Reads an ``AuditEntry``."""
        return _build(cls, d, {"at": parse_time, "actor_key": _opt(str), "actor_org": _opt(str)})


@dataclass(frozen=True)
class Me:
    """The caller (``GET /v1/me``)."""

    key_id: str
    """The key the request was made with."""
    org_id: str
    """The key's org."""
    org_name: str
    """The org's name."""
    role: str
    """The key's role."""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The JSON the API returned."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Me":
        """Reads a ``Me``."""
        return _build(cls, d, {"key_id": str, "org_id": str})


@dataclass(frozen=True)
class PlatformConfig:
    """The platform's version and defaults, and the caller's quota (``GET /v1/config``)."""

    version: str
    """The control plane's version."""
    default_vcpus: int
    """vCPUs of a box that asks for none."""
    default_memory_mib: int
    """Memory (MiB) of a box that asks for none."""
    default_disk_mib: int
    """Writable disk (MiB) of a box that asks for none."""
    quota: Quota
    """The caller's org quota."""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The JSON the API returned."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "PlatformConfig":
        """Reads a ``PlatformConfig``."""
        return _build(cls, d, {"quota": Quota.from_json})


@dataclass(frozen=True)
class UploadResult:
    """What a file upload unpacked in the box."""

    bytes: int
    """Bytes of file data written."""
    entries: int
    """Archive entries unpacked."""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "UploadResult":
        """Reads an ``UploadResult``."""
        return cls(bytes=int(d["bytes"]), entries=int(d["entries"]))


class TextDecoder:
    """Decodes a byte stream as UTF-8 piece by piece: a character split across two pieces comes out whole."""

    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, data: bytes) -> str:
        """The text of ``data`` (an incomplete character at its end is kept for the next piece)."""
        return self._dec.decode(data)

    def flush(self) -> str:
        """The rest (an incomplete character at the very end becomes U+FFFD)."""
        return self._dec.decode(b"", final=True)


TtyLike = Union[bool, TtySize, Tuple[int, int], None]
"""What ``exec(tty=...)`` takes: True (80x24), a :class:`TtySize`, ``(rows, cols)``, or None/False (no tty)."""


def tty_size(tty: TtyLike) -> Optional[TtySize]:
    """The terminal size of a ``tty`` argument."""
    if tty is None or tty is False:
        return None
    if tty is True:
        return TtySize(rows=24, cols=80)
    if isinstance(tty, TtySize):
        return tty
    rows, cols = tty
    return TtySize(rows=int(rows), cols=int(cols))
