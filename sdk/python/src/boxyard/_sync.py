"""The synchronous client: :class:`Client` and what it hands out (boxes, executions, files, snapshots, keys, admin).

Calls block the calling thread. An :class:`Execution` may be read in one thread while another sends it input.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from . import _requests as rq
from ._attach import STDIN_OFFSET_HEADER, AttachState, Exit, Gap, InputRefused, Reconnect
from ._common import (
    USER_AGENT,
    WS_LOGGER,
    BoxFields,
    Collector,
    StdinData,
    TextCallback,
    attach_url,
    execution_finished,
    finished_error,
    no_stdin_error,
    stdin_bytes,
)
from ._config import resolve_credentials
from ._errors import (
    BoxyardError,
    ConfigError,
    ConflictError,
    NotFoundError,
    ProtocolError,
    TransportError,
    WaitTimeout,
    api_error,
)
from ._models import (
    AuditEntry,
    BoxInfo,
    ExecutionInfo,
    ExecutionResult,
    Key,
    JoinToken,
    Me,
    Org,
    OutputChunk,
    PlatformConfig,
    Quota,
    Runner,
    Snapshot,
    SnapshotMetadata,
    TtyLike,
    UploadResult,
    tty_size,
)
from ._retry import Attempts, RetryPolicy, retryable_answer, transport_retryable
from ._tar import ChunkReader, extract_stream, iter_tar, read_single_file, single_file_tar
from ._uploads import ImageSource, image_reader, metadata_of, source_of

__all__ = ["Client", "Boxes", "Box", "Execution", "Files", "Snapshots", "Keys", "Admin"]

log = logging.getLogger("boxyard")

# Input queued beyond what the connection has sent before send_stdin waits (bounds memory when the process reads
# slower than the caller writes).
MAX_UNSENT = 1 << 20
# Largest WebSocket message accepted (output frames are far smaller).
MAX_MESSAGE = 64 << 20


class _Transport:
    """HTTP with the SDK's retry rules (``_retry``): one ``httpx.Client`` per :class:`Client`."""

    def __init__(self, url: str, key: str, *, timeout: float, connect_timeout: float, retry: RetryPolicy) -> None:
        self.url = url
        self.key = key
        self.retry = retry
        self.connect_timeout = connect_timeout
        self.http = httpx.Client(
            base_url=url,
            headers={"authorization": f"Bearer {key}", "user-agent": USER_AGENT},
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
        )

    def send(self, call: rq.Call, *, stream: bool = False) -> Optional[httpx.Response]:
        """Carries out a call; the response of a success (None: a DELETE that a retry found done already)."""
        attempts = Attempts(self.retry)
        while True:
            attempts.count += 1
            content: Any = call.body_bytes() if call.json is not None else (call.content() if call.content else None)
            req = self.http.build_request(
                call.method, call.path, params=call.params, content=content, headers=call.request_headers()
            )
            try:
                resp = self.http.send(req, stream=stream)
            except httpx.TransportError as e:
                if transport_retryable(call, e):
                    wait = attempts.next_wait(transport=True)
                    if wait is not None:
                        attempts.maybe_done = attempts.maybe_done or not isinstance(e, httpx.ConnectError)
                        log.info("boxyard: %s %s failed (%r); retrying in %.2f s", call.method, call.path, e, wait)
                        time.sleep(wait)
                        continue
                raise TransportError(
                    f"{call.method} {self.url}{call.path} failed after {attempts.count} attempt(s): {e!r}",
                    url=self.url,
                    attempts=attempts.count,
                ) from e
            if resp.status_code < 400:
                return resp
            try:
                body = resp.read()
            except httpx.TransportError:
                body = b""
            finally:
                resp.close()
            err = api_error(resp.status_code, body, resp.headers)
            if call.gone_is_done and attempts.maybe_done and isinstance(err, NotFoundError):
                return None
            if call.retry_answers and retryable_answer(err):
                wait = attempts.next_wait(err.retry_after)
                if wait is not None:
                    log.info("boxyard: %s %s answered %s; retrying in %.2f s", call.method, call.path, err.code, wait)
                    time.sleep(wait)
                    continue
            raise err

    def json(self, call: rq.Call) -> Any:
        """Carries out a call; its JSON answer (None for an answer without a body)."""
        resp = self.send(call)
        if resp is None or resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as e:
            raise ProtocolError(f"{call.method} {call.path}: the answer is not JSON ({e})") from e

    def close(self) -> None:
        self.http.close()


class Client:
    """A client of one Boxyard API with one API key (synchronous).

    With no arguments it reads ``BOXYARD_URL`` and ``BOXYARD_KEY``, else the CLI's default profile
    (``$XDG_CONFIG_HOME/boxyard/profiles.json``, written by ``boxyard login`` and ``boxyard dev up``).

    Args:
        url: The API's URL, e.g. ``http://127.0.0.1:8080``.
        api_key: An API key (``byk_...``).
        profile: The CLI profile to read when ``url``/``api_key`` are not given (default: ``BOXYARD_PROFILE``, else
            the default profile).
        timeout: Seconds an HTTP request may wait for its answer (box creation waits for the boot).
        connect_timeout: Seconds a connection may take to open.
        retry_deadline: Seconds within which a call is retried (transport errors where safe, and the answers the
            API marks retryable).
        attach_retries: Consecutive failed reconnections of an attach before :class:`~boxyard.AttachError`.

    The client is a context manager (``with Client() as c:``); :meth:`close` releases its connections.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        *,
        profile: Optional[str] = None,
        timeout: float = 300.0,
        connect_timeout: float = 10.0,
        retry_deadline: float = 120.0,
        attach_retries: int = 10,
    ) -> None:
        self.url, self._key = resolve_credentials(url, api_key, profile)
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"the API URL must start with http:// or https:// (got {self.url!r})")
        self.attach_retries = attach_retries
        self._t = _Transport(
            self.url,
            self._key,
            timeout=timeout,
            connect_timeout=connect_timeout,
            retry=RetryPolicy(deadline=retry_deadline),
        )
        self.boxes = Boxes(self)
        """Boxes: create, get, list."""
        self.snapshots = Snapshots(self)
        """Snapshots (org admins create, upload and delete them)."""
        self.keys = Keys(self)
        """The API keys of the caller's org (org admins)."""
        self.admin = Admin(self)
        """Platform administration (platform admins)."""

    def __repr__(self) -> str:
        return f"<boxyard.Client {self.url}>"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the client's HTTP connections."""
        self._t.close()

    def me(self) -> Me:
        """The caller: its key, org and role (``GET /v1/me``)."""
        return Me.from_json(self._t.json(rq.get("/v1/me")))

    def config(self) -> PlatformConfig:
        """The platform's version and defaults, and the caller's quota (``GET /v1/config``)."""
        return PlatformConfig.from_json(self._t.json(rq.get("/v1/config")))

    def request(self, method: str, path: str, *, json: Any = None, params: Optional[Dict[str, Any]] = None) -> Any:
        """Any endpoint, as JSON (for what has no method here): ``method`` is an HTTP method, ``path`` starts with
        ``/v1/``. Returns the answer's JSON (None for an answer without a body). Errors are :class:`ApiError`."""
        m = method.upper()
        call = rq.Call(m, path, params=params, json=json, replay_safe=m in ("GET", "HEAD", "PUT", "DELETE"))
        return self._t.json(call)


# --- boxes ----------------------------------------------------------------------------------------------------------


class Boxes:
    """The boxes of the caller's org (``client.boxes``)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        snapshot: Optional[str] = None,
        *,
        name: Optional[str] = None,
        vcpus: Optional[int] = None,
        memory_mib: Optional[int] = None,
        disk_mib: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        labels: Optional[Mapping[str, str]] = None,
        runner_selector: Optional[Mapping[str, str]] = None,
        auto_stop_seconds: Optional[int] = None,
        ttl_seconds: Optional[int] = None,
        wait: bool = True,
    ) -> "Box":
        """Creates a box and (with ``wait``, the default) returns once it runs.

        The request carries an ``Idempotency-Key``: when it is retried (a lost answer, ``503`` with
        ``retry_after``), the API creates one box, never two.

        Args:
            snapshot: The name of an active snapshot to boot (None: the runners' default image).
            name: A label for humans (not unique).
            vcpus: 1 to 256 (default: the platform's, see :meth:`Client.config`).
            memory_mib: 64 to 1048576.
            disk_mib: The writable disk, 64 to 16777216.
            env: Environment of every execution in the box.
            labels: Your labels (filter lists with ``label=``).
            runner_selector: Place the box only on runners with all these labels.
            auto_stop_seconds: Stop the box after this long without activity.
            ttl_seconds: Delete the box this long after its creation.
            wait: Return once the box runs (False: at once, with the box ``pending``).

        Raises:
            NotFoundError: unknown snapshot (``not_found``).
            InvalidRequestError: a value out of range (``invalid_request``).
            QuotaExceededError: over the org's quota.
            UnavailableError: no runner has room, within the retry deadline.
        """
        body = rq.create_box_body(
            name=name,
            snapshot=snapshot,
            vcpus=vcpus,
            memory_mib=memory_mib,
            disk_mib=disk_mib,
            env=env,
            labels=labels,
            runner_selector=runner_selector,
            auto_stop_seconds=auto_stop_seconds,
            ttl_seconds=ttl_seconds,
        )
        params = None if wait else {"wait": "false"}
        data = self._client._t.json(rq.create("/v1/boxes", body, params))
        return Box(self._client, BoxInfo.from_json(data))

    def get(self, box_id: str) -> "Box":
        """A box by id (``NotFoundError`` if it does not exist or was deleted)."""
        return Box(self._client, BoxInfo.from_json(self._client._t.json(rq.get(f"/v1/boxes/{rq.seg(box_id)}"))))

    def list(
        self,
        *,
        state: Optional[str] = None,
        label: Union[str, Tuple[str, str], None] = None,
        page_size: Optional[int] = None,
    ) -> Iterator["Box"]:
        """Every box of the org, oldest first, fetching page after page as the iteration goes.

        Args:
            state: Only boxes in this state (``running``, ``stopped``, ...).
            label: Only boxes with this label: ``"key=value"`` or ``(key, value)``.
            page_size: Boxes per request, 1 to 200 (default 50).
        """
        params: Dict[str, Any] = {}
        if state is not None:
            params["state"] = state
        lp = rq.label_param(label)
        if lp is not None:
            params["label"] = lp
        if page_size is not None:
            params["limit"] = page_size
        while True:
            page = self._client._t.json(rq.get("/v1/boxes", dict(params)))
            for item in page.get("items", []):
                yield Box(self._client, BoxInfo.from_json(item))
            cursor = page.get("next_cursor")
            if not cursor:
                return
            params["cursor"] = cursor


class Box(BoxFields):
    """A box: a microVM that runs commands. The fields of the API's ``BoxView`` are its attributes (``id``,
    ``state``, ``labels``, ...), as last read; :meth:`refresh` reads them again.

    A box is a context manager that deletes it on exit::

        with client.boxes.create("base") as box:
            print(box.run("uname -a").stdout)
    """

    def __init__(self, client: Client, info: BoxInfo) -> None:
        self._client = client
        self._info = info
        self.files = Files(self)
        """Files in the box: write, read, upload, download."""

    def __enter__(self) -> "Box":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.delete()
        except NotFoundError:
            pass
        except BoxyardError:
            if exc_type is None:
                raise
            # Do not hide the error that ended the block.
            log.warning("boxyard: could not delete box %s after an error", self.id, exc_info=True)

    def _path(self, rest: str = "") -> str:
        return f"/v1/boxes/{rq.seg(self.id)}{rest}"

    def _update(self, data: Any) -> "Box":
        self._info = BoxInfo.from_json(data)
        return self

    def refresh(self) -> "Box":
        """Reads the box again (its ``state`` and other fields); returns it."""
        return self._update(self._client._t.json(rq.get(self._path())))

    def start(self) -> "Box":
        """Boots a stopped box again (on the runner that holds its disk) and returns once it runs."""
        return self._update(self._client._t.json(rq.post(self._path("/start"), replay_safe=True)))

    def stop(self) -> "Box":
        """Powers the box off; its disk is kept (start it again with :meth:`start`). Running executions get
        SIGTERM, SIGKILL 5 s later."""
        return self._update(self._client._t.json(rq.post(self._path("/stop"), replay_safe=True)))

    def delete(self) -> None:
        """Deletes the box, running or not (its disk too). ``NotFoundError`` if it was already deleted."""
        self._client._t.send(rq.delete(self._path()))

    def wait_until_running(self, timeout: float = 300.0, poll: float = 0.5) -> "Box":
        """Polls until the box runs (after ``create(wait=False)``); raises :class:`~boxyard.WaitTimeout` when
        ``timeout`` passes, or :class:`~boxyard.BoxyardError` if the box ends up in ``error``."""
        deadline = time.monotonic() + timeout
        while True:
            self.refresh()
            if self.state == "running":
                return self
            if self.state in ("error", "lost", "stopped"):
                raise BoxyardError(f"box {self.id} is {self.state}: {self.reason or 'no reason given'}")
            if time.monotonic() + poll > deadline:
                raise WaitTimeout(f"box {self.id} is still {self.state} after {timeout} s")
            time.sleep(poll)

    # -- executions ----------------------------------------------------------------------------------------------

    def exec(
        self,
        command: rq.Command,
        *,
        stdin: bool = False,
        tty: TtyLike = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> "Execution":
        """Starts a command and returns a handle at once (read its output, send input, signal, wait).

        Args:
            command: argv (a list), or a string run with ``sh -c``; None: the snapshot's default command.
            stdin: Keep the process's stdin open for :meth:`Execution.send_stdin` (default: stdin is empty).
            tty: Run on a pseudo-terminal: True (80x24), ``(rows, cols)`` or a :class:`~boxyard.TtySize`
                (stdout and stderr merge).
            env: Environment over the box's.
            cwd: Working directory (default: the snapshot's, else the user's home).
            user: A user name in the box, a uid, or ``uid:gid`` (default: the snapshot's, else root).
            timeout: Seconds after which the process gets SIGTERM, then SIGKILL (the API's ``timeout_ms``).
        """
        body = rq.create_execution_body(
            command=command,
            env=env,
            working_dir=cwd,
            user=user,
            tty=tty_size(tty),
            stdin=stdin,
            timeout_ms=rq.timeout_ms(timeout),
        )
        data = self._client._t.json(rq.create(self._path("/executions"), body))
        info = ExecutionInfo.from_json(data)
        return Execution(self, info.id, info=info)

    def run(
        self,
        command: rq.Command,
        *,
        on_stdout: Optional[TextCallback] = None,
        on_stderr: Optional[TextCallback] = None,
        stdin: Optional[StdinData] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> ExecutionResult:
        """Runs a command to its end and returns its result (a non-zero exit is a result, not an exception).

        Args:
            command: argv (a list), or a string run with ``sh -c``.
            on_stdout: Called with stdout text as it arrives (decoded incrementally as UTF-8).
            on_stderr: Called with stderr text as it arrives.
            stdin: Input (text or bytes), sent and then closed. None: stdin is empty.
            env: Environment over the box's.
            cwd: Working directory.
            user: The user to run as.
            timeout: Seconds after which the process is killed (the result then has ``timed_out``).

        The output is followed across connection cuts from its cursor: every byte is collected exactly once.
        """
        ex = self.exec(command, stdin=stdin is not None, env=env, cwd=cwd, user=user, timeout=timeout)
        try:
            if stdin is not None:
                ex._queue_input(stdin_bytes(stdin), eof=True)
            return ex._collect(Collector(on_stdout, on_stderr), None)
        finally:
            ex.close()

    def execution(self, execution_id: str, cursor: int = 0) -> "Execution":
        """A handle for an existing execution (e.g. started by another process), following its output from
        ``cursor``. ``NotFoundError`` if there is no such execution in this box."""
        data = self._client._t.json(rq.get(self._path(f"/executions/{rq.seg(execution_id)}")))
        return Execution(self, execution_id, cursor=cursor, info=ExecutionInfo.from_json(data))

    def executions(self, *, state: Optional[str] = None, page_size: Optional[int] = None) -> Iterator[ExecutionInfo]:
        """The box's executions, oldest first (``state``: ``running``, ``finished`` or ``lost``)."""
        params: Dict[str, Any] = {}
        if state is not None:
            params["state"] = state
        if page_size is not None:
            params["limit"] = page_size
        while True:
            page = self._client._t.json(rq.get(self._path("/executions"), dict(params)))
            for item in page.get("items", []):
                yield ExecutionInfo.from_json(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return
            params["cursor"] = cursor


# --- executions -----------------------------------------------------------------------------------------------------


class _Conn:
    """One WebSocket of an attach, and its stdin writer thread (started once input is used)."""

    __slots__ = ("ws", "writer")

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.writer: Optional[threading.Thread] = None


def _abort(ws: ClientConnection) -> None:
    """Closes a cut WebSocket at once (a close handshake on a cut connection would only wait)."""
    try:
        ws.socket.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    # The library's reader thread sees the end of the socket and closes the connection by itself, unless it waits
    # for room in its message queue because nobody reads: then the messages it holds are taken (and dropped: the
    # next connection resumes from the cursor) until it is done.
    reader = getattr(ws, "recv_events_thread", None)
    if reader is None:
        try:
            ws.close()
        except Exception:  # noqa: BLE001 - closing a broken connection may fail in many ways; it is gone either way
            pass
        return
    deadline = time.monotonic() + 2.0
    while reader.is_alive() and time.monotonic() < deadline:
        try:
            ws.recv(timeout=0.05)
        except TimeoutError:
            continue
        except Exception:  # noqa: BLE001 - closed (done), or another thread reads it (it will see the end)
            break
    reader.join(timeout=max(0.0, deadline - time.monotonic()))


class Execution:
    """A running (or finished) execution: its output, its input, signals, and its result.

    Iterating gives the output as :class:`~boxyard.OutputChunk` objects (``stream``, ``data``, ``cursor``) in cursor
    order, until the execution ends. Connection cuts are resumed from the cursor: no byte is lost or repeated.
    :meth:`wait` collects the rest of the output and returns the :class:`~boxyard.ExecutionResult`; output already
    taken by iterating is not in it.

    Input (:meth:`send_stdin`, :meth:`close_stdin`) goes with offsets and is sent again after a cut, so the process
    gets every byte exactly once. One thread may read the output while another sends input.
    """

    def __init__(self, box: Box, execution_id: str, *, cursor: int = 0, info: Optional[ExecutionInfo] = None) -> None:
        self._box = box
        self._client = box._client
        self.id = execution_id
        """The execution's id."""
        self.box_id = box.id
        """The box it runs in."""
        self.info = info
        """The execution as last read from the API (:meth:`refresh` reads it again)."""
        self._state = AttachState(execution_id, cursor, max_retries=self._client.attach_retries)
        self._cond = threading.Condition()
        self._conn: Optional[_Conn] = None
        self._connect_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._collector: Optional[Collector] = None
        self._result: Optional[ExecutionResult] = None

    def __repr__(self) -> str:
        return f"<boxyard.Execution {self.id} cursor={self.cursor}>"

    def __enter__(self) -> "Execution":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def cursor(self) -> int:
        """The cursor after the last output byte handed out (where a new attach would resume)."""
        return self._state.cursor

    @property
    def reconnects(self) -> int:
        """How many times the attach connected again after a cut."""
        return max(0, self._state.connections - 1)

    @property
    def finished(self) -> bool:
        """Whether the exit was received."""
        return self._state.exit is not None

    @property
    def result(self) -> Optional[ExecutionResult]:
        """The result, once :meth:`wait` returned it."""
        return self._result

    def _path(self, rest: str = "") -> str:
        return self._box._path(f"/executions/{rq.seg(self.id)}{rest}")

    # -- control (REST) ------------------------------------------------------------------------------------------

    def refresh(self) -> ExecutionInfo:
        """Reads the execution again (its state, and its result once finished)."""
        self.info = ExecutionInfo.from_json(self._client._t.json(rq.get(self._path())))
        return self.info

    def signal(self, name: Union[str, int]) -> None:
        """Sends a signal (``"INT"``, ``"SIGTERM"``, a number) to the process group. ``ConflictError``
        (``execution_finished``) if it has finished."""
        self._client._t.send(rq.post(self._path("/signal"), {"signal": str(name)}))

    def resize(self, rows: int, cols: int) -> None:
        """Resizes the terminal of a tty execution."""
        self._client._t.send(rq.post(self._path("/resize"), {"rows": int(rows), "cols": int(cols)}, replay_safe=True))

    def kill(self) -> ExecutionInfo:
        """Kills the process group (SIGKILL); returns the execution (a finished one as it is)."""
        self.info = ExecutionInfo.from_json(self._client._t.json(rq.post(self._path("/kill"), replay_safe=True)))
        return self.info

    # -- the connection ------------------------------------------------------------------------------------------

    def _connect(self, deadline: Optional[float]) -> _Conn:
        """The current connection, connecting (with backoff, within the retry budget) if there is none."""
        with self._connect_lock:
            while True:
                st = self._state
                with self._cond:
                    if self._conn is not None:
                        return self._conn
                    if st.fatal is not None:
                        raise st.fatal
                    gave_up = st.give_up()
                    if gave_up is not None:
                        raise gave_up
                    wait = st.backoff()
                    url = attach_url(self._client.url, self.box_id, self.id, st.query())
                if wait > 0:
                    if deadline is not None and time.monotonic() + wait > deadline:
                        raise WaitTimeout(f"execution {self.id} did not finish in time (reconnecting)")
                    time.sleep(wait)
                try:
                    ws = ws_connect(
                        url,
                        additional_headers={"authorization": f"Bearer {self._client._key}"},
                        user_agent_header=USER_AGENT,
                        open_timeout=self._client._t.connect_timeout,
                        close_timeout=2,
                        max_size=MAX_MESSAGE,
                        compression=None,
                        logger=WS_LOGGER,
                    )
                except InvalidStatus as e:
                    r = e.response
                    err = api_error(r.status_code, r.body or b"", r.headers)
                    with self._cond:
                        if r.status_code >= 500 or r.status_code == 429:
                            st.failed(str(err), err.retry_after)
                            continue
                        raise st.fail(err) from None
                except InvalidURI as e:
                    with self._cond:
                        raise st.fail(ConfigError(f"bad attach URL {url}: {e}")) from e
                except (OSError, InvalidHandshake, EOFError) as e:
                    with self._cond:
                        st.failed(f"cannot connect: {e!r}")
                    continue
                with self._cond:
                    st.connected(ws.response.headers.get(STDIN_OFFSET_HEADER) if ws.response else None)
                    conn = _Conn(ws)
                    self._conn = conn
                    if st.stdin.used:
                        self._start_writer(conn)
                    self._cond.notify_all()
                    return conn

    def _drop(self, conn: _Conn, why: Optional[str], *, how: str = "abort") -> None:
        """Gives up a connection (``why``: the cut, counted against the retry budget; None: on purpose). ``how``:
        ``abort`` (a cut or an error), ``close`` (detach, with a close handshake), ``none`` (the server closes it,
        after the exit)."""
        with self._cond:
            if self._conn is conn:
                self._conn = None
                if why is not None and not self._state.done:
                    self._state.cut(why)
                self._cond.notify_all()
        if how == "abort":
            _abort(conn.ws)
        elif how == "close":
            try:
                conn.ws.close()
            except Exception:  # noqa: BLE001 - a connection that fails to close is gone all the same
                _abort(conn.ws)

    # -- input ---------------------------------------------------------------------------------------------------

    def _start_writer(self, conn: _Conn) -> None:
        # Called with self._cond held.
        if conn.writer is None:
            conn.writer = threading.Thread(
                target=self._write_loop, args=(conn,), name=f"boxyard-stdin-{self.id[:8]}", daemon=True
            )
            conn.writer.start()

    def _write_loop(self, conn: _Conn) -> None:
        """Sends the input this connection owes, a frame at a time, each after its offset declaration."""
        while True:
            with self._cond:
                while True:
                    if self._conn is not conn:
                        return
                    item = self._state.stdin.take()
                    if item is not None:
                        break
                    self._cond.wait()
                self._cond.notify_all()
            declare, frame = item
            try:
                if declare is not None:
                    conn.ws.send(declare)
                conn.ws.send(frame)
            except Exception as e:  # noqa: BLE001 - any failure to send is a cut; the reader reconnects
                self._drop(conn, f"the connection broke while sending input ({e!r})")
                return

    def _check_input(self) -> None:
        refused = self._state.stdin.refused
        if refused is not None:
            raise ConflictError(409, refused[0], refused[1])
        if self._state.exit is not None or execution_finished(self.info):
            raise finished_error(self.id)
        if self.info is not None and not self.info.stdin:
            raise no_stdin_error(self.id)

    def _queue_input(self, data: bytes, *, eof: bool) -> None:
        with self._cond:
            if data:
                self._state.stdin.append(data)
            if eof:
                self._state.stdin.close()
        self._pump(backpressure=False)

    def _pump(self, *, backpressure: bool) -> None:
        """Makes sure a connection with a writer carries the queued input (connecting if there is none); with
        ``backpressure``, waits until the connection has taken most of it."""
        while True:
            with self._cond:
                st = self._state
                if st.exit is not None:
                    return
                if st.fatal is not None:
                    raise st.fatal
                conn = self._conn
                if conn is not None:
                    self._start_writer(conn)
                    self._cond.notify_all()
                    if not backpressure or st.stdin.unsent <= MAX_UNSENT:
                        return
                    self._cond.wait(timeout=1.0)
                    continue
                reconnecting = st.connections > 0
            if reconnecting and backpressure and self._read_lock.acquire(blocking=False):
                # Cut while waiting for room, with nobody reading the output: the process may have ended (the
                # server closes after the exit). Input to it would go nowhere.
                try:
                    if self.refresh().state != "running":
                        raise finished_error(self.id)
                finally:
                    self._read_lock.release()
            self._connect(None)

    def send_stdin(self, data: StdinData) -> None:
        """Sends input (text as UTF-8, or bytes) to the process's stdin (the execution needs ``stdin=True``).

        The input is kept until the process has received it and sent again after a cut, so it arrives exactly
        once. Waits while more than 1 MiB is queued that the connection has not taken yet.

        Raises:
            ConflictError: ``execution_finished`` if the execution has finished; ``failed_precondition`` if it was
                started without stdin, or the runner refused earlier input (the process closed its stdin): the
                API's message says which. The output goes on either way.
        """
        b = stdin_bytes(data)
        self._check_input()
        with self._cond:
            if self._state.stdin.eof:
                raise BoxyardError("stdin was closed with close_stdin(): no more input can be sent")
            self._state.stdin.append(b)
        self._pump(backpressure=True)

    def close_stdin(self) -> None:
        """Closes the process's stdin after the input sent before (it reads EOF). Nothing to do on a finished
        execution."""
        if self._state.exit is not None or execution_finished(self.info):
            return
        if self.info is not None and not self.info.stdin:
            raise no_stdin_error(self.id)
        self._queue_input(b"", eof=True)

    # -- output --------------------------------------------------------------------------------------------------

    def _next(self, deadline: Optional[float]) -> Optional[OutputChunk]:
        """The next output chunk; None once the exit arrived."""
        with self._read_lock:
            st = self._state
            while True:
                if st.exit is not None:
                    return None
                if st.fatal is not None:
                    raise st.fatal
                conn = self._connect(deadline)
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    msg = conn.ws.recv(timeout=timeout)
                except TimeoutError:
                    raise WaitTimeout(f"execution {self.id} did not finish in time") from None
                except ConnectionClosed as e:
                    self._drop(conn, f"the connection closed before the exit message ({e})")
                    continue
                except OSError as e:
                    self._drop(conn, f"the connection failed before the exit message ({e!r})")
                    continue
                try:
                    with self._cond:
                        ev = st.on_text(msg) if isinstance(msg, str) else st.on_binary(msg)
                        self._cond.notify_all()
                except BaseException:
                    self._drop(conn, None)
                    raise
                if ev is None or isinstance(ev, Gap):
                    continue
                if isinstance(ev, OutputChunk):
                    return ev
                if isinstance(ev, Reconnect):
                    self._drop(conn, ev.reason)
                    continue
                if isinstance(ev, InputRefused):
                    # The server closes this connection; the next one carries on with the output.
                    self._drop(conn, None)
                    continue
                if isinstance(ev, Exit):
                    # The server closes the connection after the exit.
                    self._drop(conn, None, how="none")
                    return None

    def __iter__(self) -> "Execution":
        return self

    def __next__(self) -> OutputChunk:
        chunk = self._next(None)
        if chunk is None:
            raise StopIteration
        return chunk

    def _collect(self, collector: Collector, timeout: Optional[float]) -> ExecutionResult:
        if self._result is not None:
            return self._result
        if self._collector is None:
            self._collector = collector
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            chunk = self._next(deadline)
            if chunk is None:
                break
            self._collector.feed(chunk)
        assert self._state.exit is not None
        self._result = self._collector.finish(self.id, self._state.exit, self._state.gaps)
        return self._result

    def wait(self, timeout: Optional[float] = None) -> ExecutionResult:
        """Reads the output to the end and returns the result (its ``stdout``/``stderr`` hold the output this call
        read: not what iterating took before).

        Args:
            timeout: Seconds to wait at most; then :class:`~boxyard.WaitTimeout` is raised and the handle stays
                usable (the execution goes on; wait again to keep collecting).
        """
        return self._collect(Collector(), timeout)

    def close(self) -> None:
        """Detaches (the execution goes on). Input still queued is given a few seconds to go out first."""
        end = time.monotonic() + 5.0
        with self._cond:
            while self._conn is not None and self._state.stdin.pending() and time.monotonic() < end:
                self._cond.wait(timeout=0.1)
            conn = self._conn
        if conn is not None:
            self._drop(conn, None, how="close")


# --- files ----------------------------------------------------------------------------------------------------------


def _split_remote(path: str) -> Tuple[str, str]:
    if not path.startswith("/"):
        raise ValueError(f"a path in the box must be absolute (got {path!r})")
    if path.endswith("/"):
        raise ValueError(f"{path!r} names a directory; give the file's path")
    parent, name = path.rsplit("/", 1)
    return parent or "/", name


class Files:
    """Files in a box (``box.files``): tar streams through the API, made and read with ``tarfile``."""

    def __init__(self, box: Box) -> None:
        self._box = box

    def _put_tar(self, remote_dir: str, make: Callable[[], Union[bytes, Iterator[bytes]]]) -> UploadResult:
        call = rq.Call(
            "PUT",
            self._box._path("/files"),
            params={"path": remote_dir},
            content=make,
            content_type="application/x-tar",
            replay_safe=True,
        )
        return UploadResult.from_json(self._box._client._t.json(call))

    def write(self, path: str, data: Union[str, bytes], *, mode: int = 0o644) -> None:
        """Writes a file (text as UTF-8, or bytes), replacing it; its directory is created if missing."""
        parent, name = _split_remote(path)
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        archive = single_file_tar(name, raw, mode)
        self._put_tar(parent, lambda: archive)

    def read(self, path: str) -> bytes:
        """A file's bytes (``IsADirectoryError`` for a directory: use :meth:`download`)."""
        call = rq.get(self._box._path("/files"), {"path": path})
        resp = self._box._client._t.send(call, stream=True)
        assert resp is not None
        try:
            return read_single_file(ChunkReader(resp.iter_bytes()), path)  # type: ignore[arg-type]
        except httpx.TransportError as e:
            raise TransportError(f"reading {path} broke off: {e!r}", url=self._box._client.url) from e
        finally:
            resp.close()

    def upload(self, local_path: Union[str, "os.PathLike[str]"], remote_dir: str) -> UploadResult:
        """Uploads a local file or directory tree into the directory ``remote_dir`` of the box (created if
        missing): ``upload("src", "/work")`` makes ``/work/src``. Streamed: read from disk as it is sent."""
        if not os.path.lexists(local_path):
            raise FileNotFoundError(f"{local_path} does not exist")
        return self._put_tar(remote_dir, lambda: iter_tar(local_path))

    def download(self, remote_path: str, local_dir: Union[str, "os.PathLike[str]"]) -> List[Path]:
        """Downloads a file or directory of the box into the local directory ``local_dir`` (created if missing);
        returns the paths written. Streamed into ``tarfile`` as it arrives; entries that would land outside
        ``local_dir`` are refused (:class:`~boxyard.UnsafeArchiveError`)."""
        call = rq.get(self._box._path("/files"), {"path": remote_path})
        resp = self._box._client._t.send(call, stream=True)
        assert resp is not None
        try:
            return extract_stream(ChunkReader(resp.iter_bytes()), local_dir)  # type: ignore[arg-type]
        except httpx.TransportError as e:
            raise TransportError(f"downloading {remote_path} broke off: {e!r}", url=self._box._client.url) from e
        finally:
            resp.close()


# --- snapshots, keys ------------------------------------------------------------------------------------------------


class Snapshots:
    """Snapshots: the images boxes boot from (``client.snapshots``). Members list and read them; org admins
    create, upload and delete them."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        name: str,
        *,
        metadata: Union[SnapshotMetadata, Mapping[str, Any], None] = None,
        public: bool = False,
        source: Union[Tuple[str, str], Mapping[str, str], None] = None,
    ) -> Snapshot:
        """Registers a snapshot; then upload its image with :meth:`upload_image` (or give ``source``).

        Args:
            name: Unique in the org: ``[a-z0-9][a-z0-9._-]*``, at most 63 characters.
            metadata: Defaults for executions in its boxes: a :class:`~boxyard.SnapshotMetadata`, or a mapping with
                ``cmd``, ``env``, ``working_dir``, ``user``.
            public: Publish to every org (platform admins only).
            source: ``(key, digest)`` of an image already in the snapshot bucket, instead of an upload.
        """
        body = rq.create_snapshot_body(name, metadata=metadata_of(metadata), public=public, source=source_of(source))
        return Snapshot.from_json(self._client._t.json(rq.post("/v1/snapshots", body)))

    def upload_image(
        self,
        snapshot_id: str,
        image: ImageSource,
        *,
        on_progress: Optional[Callable[[int, Optional[int]], None]] = None,
    ) -> Snapshot:
        """Streams an image (a path, bytes, or a binary file) into a new snapshot; returns it ``active``.

        Args:
            snapshot_id: The snapshot (from :meth:`create`).
            image: The root filesystem image.
            on_progress: Called with ``(bytes_sent, total_bytes_or_None)`` as the upload goes.
        """
        reader = image_reader(image, on_progress)
        call = rq.Call(
            "PUT",
            f"/v1/snapshots/{rq.seg(snapshot_id)}/image",
            content=reader.chunks,
            content_type="application/octet-stream",
            headers=reader.headers(),
        )
        try:
            return Snapshot.from_json(self._client._t.json(call))
        finally:
            reader.close()

    def list(self) -> List[Snapshot]:
        """The snapshots the caller can use: its org's and the public ones, by name."""
        return [Snapshot.from_json(s) for s in self._client._t.json(rq.get("/v1/snapshots")).get("items", [])]

    def get(self, snapshot_id: str) -> Snapshot:
        """A snapshot by id."""
        return Snapshot.from_json(self._client._t.json(rq.get(f"/v1/snapshots/{rq.seg(snapshot_id)}")))

    def delete(self, snapshot_id: str) -> None:
        """Deletes a snapshot that no box uses (``ConflictError`` ``snapshot_in_use`` otherwise)."""
        self._client._t.send(rq.delete(f"/v1/snapshots/{rq.seg(snapshot_id)}"))


class Keys:
    """The API keys of the caller's org (``client.keys``; org admins)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, name: str, *, role: Optional[str] = None) -> Key:
        """Creates a key (``role``: ``member``, the default, or ``admin``); its ``secret`` is in this answer only."""
        return Key.from_json(self._client._t.json(rq.post("/v1/keys", rq.create_key_body(name, role))))

    def list(self) -> List[Key]:
        """The org's keys, revoked ones included."""
        return [Key.from_json(k) for k in self._client._t.json(rq.get("/v1/keys")).get("items", [])]

    def revoke(self, key_id: str) -> Key:
        """Revokes a key (effective at its next request; revoking twice is harmless)."""
        return Key.from_json(self._client._t.json(rq.delete(f"/v1/keys/{rq.seg(key_id)}", gone_is_done=False)))


# --- platform administration ----------------------------------------------------------------------------------------


class Admin:
    """Platform administration (``client.admin``; platform admin keys): orgs, quotas, any org's keys, runners,
    join tokens and the audit log."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _json(self, call: rq.Call) -> Any:
        return self._client._t.json(call)

    # orgs

    def create_org(self, name: str, *, quota: Optional[Quota] = None) -> Org:
        """Creates an org (with the default quota unless ``quota`` is given)."""
        return Org.from_json(self._json(rq.post("/v1/admin/orgs", rq.create_org_body(name, quota))))

    def list_orgs(self) -> List[Org]:
        """Every org."""
        return [Org.from_json(o) for o in self._json(rq.get("/v1/admin/orgs")).get("items", [])]

    def get_org(self, org_id: str) -> Org:
        """An org."""
        return Org.from_json(self._json(rq.get(f"/v1/admin/orgs/{rq.seg(org_id)}")))

    def delete_org(self, org_id: str) -> None:
        """Deletes an org without boxes (other than deleted ones) and snapshots; its keys stop working."""
        self._client._t.send(rq.delete(f"/v1/admin/orgs/{rq.seg(org_id)}"))

    def set_quota(self, org_id: str, quota: Quota) -> Org:
        """Sets an org's quota (for new boxes and starts; running boxes stay)."""
        return Org.from_json(self._json(rq.put_json(f"/v1/admin/orgs/{rq.seg(org_id)}/quota", quota.to_json())))

    # any org's keys

    def create_org_key(self, org_id: str, name: str, *, role: Optional[str] = None) -> Key:
        """Creates a key in any org (e.g. its first admin key); its ``secret`` is in this answer only."""
        body = rq.create_key_body(name, role)
        return Key.from_json(self._json(rq.post(f"/v1/admin/orgs/{rq.seg(org_id)}/keys", body)))

    def list_org_keys(self, org_id: str) -> List[Key]:
        """The keys of any org."""
        return [Key.from_json(k) for k in self._json(rq.get(f"/v1/admin/orgs/{rq.seg(org_id)}/keys")).get("items", [])]

    def revoke_org_key(self, org_id: str, key_id: str) -> Key:
        """Revokes a key of any org."""
        path = f"/v1/admin/orgs/{rq.seg(org_id)}/keys/{rq.seg(key_id)}"
        return Key.from_json(self._json(rq.delete(path, gone_is_done=False)))

    # runners

    def list_runners(self) -> List[Runner]:
        """The runners of the fleet, by name."""
        return [Runner.from_json(r) for r in self._json(rq.get("/v1/admin/runners")).get("items", [])]

    def get_runner(self, runner_id: str) -> Runner:
        """A runner."""
        return Runner.from_json(self._json(rq.get(f"/v1/admin/runners/{rq.seg(runner_id)}")))

    def cordon_runner(self, runner_id: str) -> Runner:
        """Cordons a runner: no new boxes; its boxes keep running."""
        return Runner.from_json(self._json(rq.post(f"/v1/admin/runners/{rq.seg(runner_id)}/cordon", replay_safe=True)))

    def drain_runner(self, runner_id: str) -> Runner:
        """Drains a runner (cordoned and draining, before maintenance)."""
        return Runner.from_json(self._json(rq.post(f"/v1/admin/runners/{rq.seg(runner_id)}/drain", replay_safe=True)))

    def uncordon_runner(self, runner_id: str) -> Runner:
        """Puts a cordoned or drained runner back in service."""
        path = f"/v1/admin/runners/{rq.seg(runner_id)}/uncordon"
        return Runner.from_json(self._json(rq.post(path, replay_safe=True)))

    def delete_runner(self, runner_id: str) -> None:
        """Removes a runner without boxes from the fleet (``ConflictError`` ``runner_in_use`` otherwise)."""
        self._client._t.send(rq.delete(f"/v1/admin/runners/{rq.seg(runner_id)}"))

    # join tokens

    def create_join_token(self, *, description: str = "", ttl_seconds: Optional[int] = None) -> JoinToken:
        """Issues a runner join token (``ttl_seconds``: 60 to 2592000, default 86400); its ``secret`` is in this
        answer only."""
        body: Dict[str, Any] = {}
        if description:
            body["description"] = description
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        return JoinToken.from_json(self._json(rq.post("/v1/admin/join-tokens", body)))

    def list_join_tokens(self) -> List[JoinToken]:
        """Every join token, revoked and expired ones included."""
        return [JoinToken.from_json(t) for t in self._json(rq.get("/v1/admin/join-tokens")).get("items", [])]

    def revoke_join_token(self, token_id: str) -> JoinToken:
        """Revokes a join token (runners that registered with it are not affected)."""
        path = f"/v1/admin/join-tokens/{rq.seg(token_id)}"
        return JoinToken.from_json(self._json(rq.delete(path, gone_is_done=False)))

    # audit

    def audit_log(self, *, limit: Optional[int] = None) -> List[AuditEntry]:
        """The audit log of admin actions, newest first (``limit``: 1 to 1000, default 100)."""
        params = {"limit": limit} if limit is not None else None
        return [AuditEntry.from_json(e) for e in self._json(rq.get("/v1/admin/audit", params)).get("items", [])]
