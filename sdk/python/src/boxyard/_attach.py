"""The attach protocol without I/O: frames, the output cursor, and stdin with offsets (docs/api.md, "Attach" and
"Resuming after a cut"). The sync and async executions drive the same state with their own sockets.

Output: every binary frame is ``[stream: u8][cursor: u64 big endian][data]``. The state keeps ``cursor`` = the
cursor after the last byte handed out; after a cut the next connection asks for ``?cursor=<cursor>`` and anything
before it that arrives again is dropped, so each byte is handed out exactly once.

Input: the process's stdin position is told by the upgrade's ``x-boxyard-stdin-offset`` header and by
``stdin_offset`` messages. Input is kept until acknowledged; every frame is sent after a ``stdin_offset`` declaration
of its own position, so after a cut the unacknowledged rest is sent again with its offsets and the runner skips what
the process already got (each input byte arrives once, as long as this is the only writer).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple, Union

from ._errors import ApiError, AttachError, ProtocolError, attach_error
from ._models import STDERR, STDOUT, OutputChunk

__all__ = [
    "STDIN_OFFSET_HEADER",
    "AttachState",
    "StdinBuffer",
    "Exit",
    "Gap",
    "Reconnect",
    "InputRefused",
    "encode_output",
    "decode_output",
]

STDIN_OFFSET_HEADER = "x-boxyard-stdin-offset"
"""The upgrade response header that says how many stdin bytes the process has received."""

_HEADER = struct.Struct(">BQ")
_STREAMS = {1: STDOUT, 2: STDERR}
_STREAM_IDS = {STDOUT: 1, STDERR: 2}

INPUT_FRAME = 64 * 1024
"""The largest stdin frame: a connection that breaks again has still moved input forward."""


def encode_output(stream: str, cursor: int, data: bytes) -> bytes:
    """The binary frame of an output record (what the server sends; used by tests)."""
    return _HEADER.pack(_STREAM_IDS[stream], cursor) + data


def decode_output(frame: bytes) -> Tuple[str, int, bytes]:
    """``(stream, cursor, data)`` of a binary output frame."""
    if len(frame) < _HEADER.size:
        raise ProtocolError(f"short output frame ({len(frame)} bytes; the header is {_HEADER.size})")
    sid, cursor = _HEADER.unpack_from(frame)
    stream = _STREAMS.get(sid)
    if stream is None:
        raise ProtocolError(f"unknown stream id {sid} in an output frame")
    return stream, cursor, bytes(frame[_HEADER.size :])


def _text(msg: Any) -> str:
    return json.dumps(msg, separators=(",", ":"), sort_keys=True)


def stdin_offset_message(offset: int) -> str:
    """``{"type":"stdin_offset","offset":N}``: the next binary frame starts at stdin byte N."""
    return _text({"type": "stdin_offset", "offset": offset})


STDIN_EOF = _text({"type": "stdin_eof"})


def resize_message(rows: int, cols: int) -> str:
    """``{"type":"resize",...}``."""
    return _text({"type": "resize", "rows": rows, "cols": cols})


def signal_message(signal: str) -> str:
    """``{"type":"signal","signal":S}``."""
    return _text({"type": "signal", "signal": signal})


@dataclass(frozen=True)
class Gap:
    """Output in ``[start, end)`` was dropped by the runner's retention before it was read."""

    start: int
    end: int


@dataclass(frozen=True)
class Exit:
    """The ``exit`` message: the execution finished and all output before ``output_end`` was sent."""

    exit_code: Optional[int]
    signal: Optional[str]
    timed_out: bool
    killed: bool
    error: Optional[str]
    output_end: int


@dataclass(frozen=True)
class Reconnect:
    """The server ended this connection for a reason a new one can get past (the runner went away)."""

    reason: str


@dataclass(frozen=True)
class InputRefused:
    """The runner refused the input (the process closed its stdin or ended, or was started without stdin) and the
    server ended the connection: the output goes on on a new one, the input is given up."""

    code: str
    message: str


Event = Union[OutputChunk, Gap, Exit, Reconnect, InputRefused, None]


class StdinBuffer:
    """Input not yet acknowledged, kept for a resend after a cut, and how much of it this connection has sent."""

    def __init__(self) -> None:
        # The stdin offset of the first unacknowledged byte; None until the server said where stdin stands.
        self.base: Optional[int] = None
        self._buf = bytearray()
        self._head = 0  # bytes at the start of _buf already acknowledged (dropped lazily)
        # Bytes of the unacknowledged input (from _head) sent on the current connection.
        self.sent = 0
        self.eof = False
        self.eof_sent = False
        # Whether input was ever given.
        self.used = False
        # The server never said where stdin stands: input is sent once, plainly appended, without offsets.
        self.plain = False
        # The runner refused input (the API's error): nothing more is sent.
        self.refused: Optional[Tuple[str, str]] = None

    @property
    def unacked(self) -> int:
        """Bytes given but not acknowledged."""
        return len(self._buf) - self._head

    @property
    def unsent(self) -> int:
        """Bytes the current connection still has to send."""
        return self.unacked - self.sent

    def append(self, data: bytes) -> None:
        """Adds input after everything given before."""
        self.used = True
        self._buf += data

    def close(self) -> None:
        """Ends the input (an EOF follows everything given, after a cut as well)."""
        self.used = True
        self.eof = True

    def refuse(self, code: str, message: str) -> None:
        """The runner takes no more input: what is queued is given up."""
        self.refused = (code, message)
        self._buf = bytearray()
        self._head = 0
        self.sent = 0
        self.eof_sent = True

    def _drop(self, n: int) -> None:
        self._head += n
        if self._head > 1 << 20 and self._head * 2 > len(self._buf):
            del self._buf[: self._head]
            self._head = 0

    def ack(self, offset: int) -> bool:
        """The process has received everything below ``offset``; True if that is new.

        An offset beyond everything sent means another writer added input: later input goes after it.
        """
        if self.base is None or offset <= self.base:
            return False
        n = min(offset - self.base, self.unacked)
        self._drop(n)
        self.sent = max(0, self.sent - n)
        self.base = offset if self.unacked == 0 else self.base + n
        return True

    def reconnected(self, server_offset: Optional[int]) -> bool:
        """A new connection: drop what the server says arrived; the rest is sent again. True if input progressed."""
        progressed = False
        if server_offset is not None:
            if self.base is None:
                self.base = server_offset
                self.plain = False
            else:
                progressed = self.ack(server_offset)
        elif self.base is None:
            self.plain = True
            return False
        # Without an offset the runner could not tell: resend everything unacknowledged (it skips what arrived).
        self.sent = 0
        self.eof_sent = False
        return progressed

    def take(self) -> Optional[Tuple[Optional[str], Union[bytes, str]]]:
        """The next thing to send on this connection (an offset declaration and its frame: input bytes, or the
        EOF message), marked as sent; None when there is nothing. Without offsets (the server never said where stdin
        stands) the declaration is None and the input is not kept."""
        if self.refused is not None:
            return None
        if self.base is None:
            if not self.plain:
                return None
            if self.unacked:
                plain = bytes(self._buf[self._head : self._head + INPUT_FRAME])
                self._drop(len(plain))
                return None, plain
            if self.eof and not self.eof_sent:
                self.eof_sent = True
                return None, STDIN_EOF
            return None
        if self.sent < self.unacked:
            start = self._head + self.sent
            frame = bytes(self._buf[start : start + INPUT_FRAME])
            declare = stdin_offset_message(self.base + self.sent)
            self.sent += len(frame)
            return declare, frame
        if self.eof and not self.eof_sent:
            self.eof_sent = True
            return stdin_offset_message(self.base + self.unacked), STDIN_EOF
        return None

    def pending(self) -> bool:
        """Whether :meth:`take` has something."""
        if self.refused is not None:
            return False
        if self.base is None:
            return self.plain and (self.unacked > 0 or (self.eof and not self.eof_sent))
        return self.sent < self.unacked or (self.eof and not self.eof_sent)


class AttachState:
    """One execution's attach: where the output stands, the stdin buffer, and the reconnection budget."""

    def __init__(
        self,
        execution_id: str,
        cursor: int = 0,
        *,
        max_retries: int = 10,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
    ) -> None:
        if cursor < 0:
            raise ValueError("cursor must be >= 0")
        self.execution_id = execution_id
        self.cursor = cursor
        self.max_retries = max_retries
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.failures = 0
        self.reconnects = 0
        self.connections = 0
        self.last_error = ""
        self.retry_after: Optional[float] = None
        self.exit: Optional[Exit] = None
        self.gaps: List[Gap] = []
        self.fatal: Optional[BaseException] = None
        self.stdin = StdinBuffer()

    @property
    def done(self) -> bool:
        """The exit arrived, or the attach failed for good."""
        return self.exit is not None or self.fatal is not None

    def query(self) -> str:
        """The query of the next connection."""
        return f"cursor={self.cursor}"

    # -- connections ---------------------------------------------------------------------------------------------

    def connected(self, stdin_offset_header: Optional[str]) -> None:
        """A connection opened; ``stdin_offset_header`` is the upgrade's ``x-boxyard-stdin-offset``, if any."""
        offset: Optional[int] = None
        if stdin_offset_header is not None:
            try:
                offset = int(stdin_offset_header.strip())
            except ValueError:
                offset = None
        self.connections += 1
        self.retry_after = None
        if self.stdin.reconnected(offset):
            # Input got through since the last connection: progress, like output.
            self.failures = 0

    def failed(self, why: str, retry_after: Optional[float] = None) -> None:
        """A connection attempt failed in a way a later one may not."""
        self.failures += 1
        self.last_error = why
        self.retry_after = retry_after

    def cut(self, why: str) -> None:
        """The current connection ended before the exit."""
        self.failures += 1
        self.last_error = why

    def give_up(self) -> Optional[AttachError]:
        """The error to end with when the retries ran out (None while they have not)."""
        if self.failures > self.max_retries:
            err = AttachError(
                execution_id=self.execution_id,
                cursor=self.cursor,
                attempts=self.failures,
                last_error=self.last_error or "unknown",
            )
            self.fatal = err
            return err
        return None

    def backoff(self) -> float:
        """The wait before the next connection attempt (0 for the first)."""
        if self.failures == 0:
            return 0.0
        wait: float = min(self.max_backoff, self.initial_backoff * (1 << min(self.failures - 1, 16)))
        if self.retry_after is not None:
            wait = max(wait, min(self.retry_after, 30.0))
        return wait

    def fail(self, err: BaseException) -> BaseException:
        """Ends the attach with ``err`` (returned, to raise)."""
        self.fatal = err
        return err

    # -- what arrives ----------------------------------------------------------------------------------------------

    def on_binary(self, frame: bytes) -> Optional[OutputChunk]:
        """An output frame: the chunk to hand out (None if it was all seen before)."""
        stream, cursor, data = decode_output(frame)
        end = cursor + len(data)
        if end <= self.cursor:
            return None
        if cursor < self.cursor:
            data = data[self.cursor - cursor :]
            cursor = self.cursor
        elif cursor > self.cursor:
            raise self.fail(
                ProtocolError(f"output skipped from cursor {self.cursor} to {cursor} without a gap message")
            )
        self.cursor = end
        self.failures = 0
        return OutputChunk(stream=stream, data=data, cursor=cursor)

    def on_text(self, text: str) -> Event:
        """A text message: a gap, the exit, a reason to reconnect, or None (handled here, e.g. an acknowledgement).
        Raises the API's error for an ``error`` message that ends the attach."""
        try:
            msg = json.loads(text)
        except ValueError as e:
            raise self.fail(ProtocolError(f"bad text frame from the server: {e}")) from None
        if not isinstance(msg, dict):
            raise self.fail(ProtocolError("bad text frame from the server: not an object"))
        kind = msg.get("type")
        if kind == "gap":
            start, end = int(msg["from"]), int(msg["to"])
            if end <= self.cursor:
                return None
            gap = Gap(max(start, self.cursor), end)
            self.cursor = end
            self.gaps.append(gap)
            self.failures = 0
            return gap
        if kind == "stdin_offset":
            if self.stdin.ack(int(msg["offset"])):
                self.failures = 0
            return None
        if kind == "exit":
            ex = Exit(
                exit_code=msg.get("exit_code"),
                signal=msg.get("signal"),
                timed_out=bool(msg.get("timed_out", False)),
                killed=bool(msg.get("killed", False)),
                error=msg.get("error"),
                output_end=int(msg.get("output_end", self.cursor)),
            )
            self.exit = ex
            return ex
        if kind == "error":
            code = str(msg.get("code", "unknown"))
            message = str(msg.get("message", ""))
            if code in ("runner_unavailable", "runner_closed"):
                return Reconnect(f"{code}: {message}")
            if code == "invalid_message":
                return None
            if code == "failed_precondition" and self.stdin.used and self.stdin.refused is None:
                # Input this connection sent was refused (e.g. the process closed its stdin or exited); the output
                # and the exit are still to come.
                self.stdin.refuse(code, message)
                return InputRefused(code, message)
            err: ApiError = attach_error(code, message)
            raise self.fail(err)
        # A message of a newer server: ignore it.
        return None
