"""What the sync and async clients share beyond the protocol: the box's attributes, output collection, URLs."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable, Dict, List, Optional, Union

from ._attach import Exit, Gap
from ._errors import ConflictError
from ._models import STDOUT, BoxInfo, ExecutionInfo, ExecutionResult, OutputChunk, TextDecoder
from ._requests import seg

__all__ = ["BoxFields", "Collector", "StdinData", "stdin_bytes", "attach_url", "USER_AGENT", "WS_LOGGER"]

from . import _version

USER_AGENT = f"boxyard-python/{_version.VERSION}"

WS_LOGGER = logging.getLogger("boxyard.websocket")
"""The logger of the SDK's WebSocket connections (the ``websockets`` library logs there)."""


class _SendRace(logging.Filter):
    """``websockets``' sync client logs "unexpected internal error" (an ``EOFError``) when a send fails while its
    reader thread still processes data from the peer that just closed: a race inside the library, harmless here (the
    connection is cut and resumed from the cursor). It is kept at DEBUG level instead of ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if record.levelno >= logging.ERROR and record.msg == "unexpected internal error" and isinstance(exc, EOFError):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return WS_LOGGER.isEnabledFor(logging.DEBUG)
        return True


WS_LOGGER.addFilter(_SendRace())

StdinData = Union[str, bytes, bytearray, memoryview]
"""Input for a process: text (sent as UTF-8) or bytes."""

TextCallback = Callable[[str], None]
"""A callback that gets output text as it arrives."""


def stdin_bytes(data: StdinData) -> bytes:
    """Input as bytes (text is encoded as UTF-8)."""
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"stdin must be str or bytes, not {type(data).__name__}")


def attach_url(base: str, box_id: str, execution_id: str, query: str) -> str:
    """The WebSocket URL of an execution's attach."""
    if base.startswith("https://"):
        ws = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        ws = "ws://" + base[len("http://") :]
    else:
        ws = base
    return f"{ws}/v1/boxes/{seg(box_id)}/executions/{seg(execution_id)}/attach?{query}"


def finished_error(execution_id: str) -> ConflictError:
    """The error of input sent to an execution that has finished (the API drops such input without a word)."""
    return ConflictError(
        409, "execution_finished", f"execution {execution_id} has finished: its stdin takes no more input"
    )


def no_stdin_error(execution_id: str) -> ConflictError:
    """The error of input sent to an execution created without stdin (what the API answers on the attach)."""
    return ConflictError(
        409,
        "failed_precondition",
        f"execution {execution_id} was started without stdin: pass stdin=True to exec to write to it",
    )


class Collector:
    """Gathers an execution's output into a result, and hands text to callbacks as it arrives (decoded
    incrementally, so a character split between two chunks reaches the callback whole)."""

    def __init__(self, on_stdout: Optional[TextCallback] = None, on_stderr: Optional[TextCallback] = None) -> None:
        self.stdout: List[bytes] = []
        self.stderr: List[bytes] = []
        self._cb: Dict[str, Optional[TextCallback]] = {STDOUT: on_stdout, "stderr": on_stderr}
        self._dec: Dict[str, TextDecoder] = {STDOUT: TextDecoder(), "stderr": TextDecoder()}

    def feed(self, chunk: OutputChunk) -> None:
        """One chunk of output."""
        (self.stdout if chunk.stream == STDOUT else self.stderr).append(chunk.data)
        cb = self._cb[chunk.stream]
        if cb is not None:
            text = self._dec[chunk.stream].feed(chunk.data)
            if text:
                cb(text)

    def finish(self, execution_id: str, exit: Exit, gaps: List[Gap]) -> ExecutionResult:
        """The result, once the exit arrived (the callbacks get what their decoders still hold)."""
        for stream, cb in self._cb.items():
            if cb is not None:
                rest = self._dec[stream].flush()
                if rest:
                    cb(rest)
        return ExecutionResult(
            execution_id=execution_id,
            exit_code=exit.exit_code,
            signal=exit.signal,
            timed_out=exit.timed_out,
            killed=exit.killed,
            error=exit.error,
            stdout_bytes=b"".join(self.stdout),
            stderr_bytes=b"".join(self.stderr),
            output_end=exit.output_end,
            gaps=tuple((g.start, g.end) for g in gaps),
        )


class BoxFields:
    """The fields of a box (``BoxView``) as attributes, read from the last view the API returned."""

    _info: BoxInfo

    @property
    def info(self) -> BoxInfo:
        """The box as last read from the API."""
        return self._info

    @property
    def id(self) -> str:
        """The box's id."""
        return self._info.id

    @property
    def name(self) -> Optional[str]:
        """Its label for humans."""
        return self._info.name

    @property
    def snapshot(self) -> Optional[str]:
        """The snapshot it boots (None: the runner's default image)."""
        return self._info.snapshot

    @property
    def vcpus(self) -> int:
        """Its vCPUs."""
        return self._info.vcpus

    @property
    def memory_mib(self) -> int:
        """Its memory, MiB."""
        return self._info.memory_mib

    @property
    def disk_mib(self) -> int:
        """Its writable disk, MiB."""
        return self._info.disk_mib

    @property
    def env(self) -> Dict[str, str]:
        """Environment of every execution in the box."""
        return self._info.env

    @property
    def labels(self) -> Dict[str, str]:
        """The labels given at creation."""
        return self._info.labels

    @property
    def runner_selector(self) -> Dict[str, str]:
        """The runner labels it was placed by."""
        return self._info.runner_selector

    @property
    def state(self) -> str:
        """``pending``, ``starting``, ``running``, ``stopping``, ``stopped``, ``error`` or ``lost`` (as last read:
        call ``refresh()`` for the current one)."""
        return self._info.state

    @property
    def desired_state(self) -> str:
        """``running`` or ``stopped``."""
        return self._info.desired_state

    @property
    def reason(self) -> Optional[str]:
        """Why it is in its state."""
        return self._info.reason

    @property
    def runner_id(self) -> Optional[str]:
        """Its runner's id."""
        return self._info.runner_id

    @property
    def auto_stop_seconds(self) -> Optional[int]:
        """Stop after this many idle seconds (None: never)."""
        return self._info.auto_stop_seconds

    @property
    def ttl_seconds(self) -> Optional[int]:
        """Deleted this many seconds after creation (None: never)."""
        return self._info.ttl_seconds

    @property
    def created_at(self) -> datetime:
        """When it was created."""
        return self._info.created_at

    @property
    def updated_at(self) -> datetime:
        """When it last changed."""
        return self._info.updated_at

    @property
    def started_at(self) -> Optional[datetime]:
        """When it last started."""
        return self._info.started_at

    @property
    def stopped_at(self) -> Optional[datetime]:
        """When it last stopped."""
        return self._info.stopped_at

    @property
    def last_activity_at(self) -> Optional[datetime]:
        """Its last activity (what postpones auto-stop)."""
        return self._info.last_activity_at

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.state}>"


def execution_finished(info: Optional[ExecutionInfo]) -> bool:
    """Whether a view says the execution is over."""
    return info is not None and info.state != "running"
