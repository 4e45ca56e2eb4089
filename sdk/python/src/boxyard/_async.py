"""The asyncio client: :class:`AsyncClient` and what it hands out, with the surface of the sync client (every call
is awaited; iterations are ``async for``; boxes and executions are ``async with`` context managers)."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import queue
import time
from pathlib import Path
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Dict,
    Generator,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    Union,
)

import httpx
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

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
    TtyLike,
    UploadResult,
    tty_size,
)
from ._retry import Attempts, RetryPolicy, retryable_answer, transport_retryable
from ._tar import ChunkReader, extract_stream, iter_tar, read_single_file, single_file_tar
from ._uploads import ImageSource, image_reader, metadata_of, source_of

__all__ = [
    "AsyncClient",
    "AsyncBoxes",
    "AsyncBox",
    "AsyncExecution",
    "AsyncFiles",
    "AsyncSnapshots",
    "AsyncKeys",
    "AsyncAdmin",
]

log = logging.getLogger("boxyard")

MAX_UNSENT = 1 << 20
MAX_MESSAGE = 64 << 20

_Content = Union[bytes, Iterator[bytes]]


async def _in_thread(make: Callable[[], _Content]) -> AsyncIterator[bytes]:
    """A body made by blocking code (reading local files) as an async iterator: each piece is read in a worker
    thread, so the event loop never waits for the disk."""
    it = await asyncio.get_running_loop().run_in_executor(None, make)
    if isinstance(it, bytes):
        yield it
        return
    while True:
        piece = await asyncio.get_running_loop().run_in_executor(None, next, it, None)
        if piece is None:
            return
        yield piece


class _AsyncTransport:
    """HTTP with the SDK's retry rules (``_retry``): one ``httpx.AsyncClient`` per :class:`AsyncClient`."""

    def __init__(self, url: str, key: str, *, timeout: float, connect_timeout: float, retry: RetryPolicy) -> None:
        self.url = url
        self.key = key
        self.retry = retry
        self.connect_timeout = connect_timeout
        self.http = httpx.AsyncClient(
            base_url=url,
            headers={"authorization": f"Bearer {key}", "user-agent": USER_AGENT},
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
        )

    async def send(self, call: rq.Call, *, stream: bool = False) -> Optional[httpx.Response]:
        """Carries out a call; the response of a success (None: a DELETE that a retry found done already)."""
        attempts = Attempts(self.retry)
        while True:
            attempts.count += 1
            content: Any = None
            if call.json is not None:
                content = call.body_bytes()
            elif call.acontent is not None:
                content = call.acontent()
            elif call.content is not None:
                content = _in_thread(call.content)
            req = self.http.build_request(
                call.method, call.path, params=call.params, content=content, headers=call.request_headers()
            )
            try:
                resp = await self.http.send(req, stream=stream)
            except httpx.TransportError as e:
                if transport_retryable(call, e):
                    wait = attempts.next_wait(transport=True)
                    if wait is not None:
                        attempts.maybe_done = attempts.maybe_done or not isinstance(e, httpx.ConnectError)
                        log.info("boxyard: %s %s failed (%r); retrying in %.2f s", call.method, call.path, e, wait)
                        await asyncio.sleep(wait)
                        continue
                raise TransportError(
                    f"{call.method} {self.url}{call.path} failed after {attempts.count} attempt(s): {e!r}",
                    url=self.url,
                    attempts=attempts.count,
                ) from e
            if resp.status_code < 400:
                return resp
            try:
                body = await resp.aread()
            except httpx.TransportError:
                body = b""
            finally:
                await resp.aclose()
            err = api_error(resp.status_code, body, resp.headers)
            if call.gone_is_done and attempts.maybe_done and isinstance(err, NotFoundError):
                return None
            if call.retry_answers and retryable_answer(err):
                wait = attempts.next_wait(err.retry_after)
                if wait is not None:
                    log.info("boxyard: %s %s answered %s; retrying in %.2f s", call.method, call.path, err.code, wait)
                    await asyncio.sleep(wait)
                    continue
            raise err

    async def json(self, call: rq.Call) -> Any:
        """Carries out a call; its JSON answer (None for an answer without a body)."""
        resp = await self.send(call)
        if resp is None or resp.status_code == 204 or not resp.content:
            return None
        try:
            return resp.json()
        except ValueError as e:
            raise ProtocolError(f"{call.method} {call.path}: the answer is not JSON ({e})") from e

    async def close(self) -> None:
        await self.http.aclose()


class AsyncClient:
    """A client of one Boxyard API with one API key, for asyncio: the surface of :class:`~boxyard.Client`, every
    call awaited.

    With no arguments it reads ``BOXYARD_URL`` and ``BOXYARD_KEY``, else the CLI's default profile. The arguments
    are those of :class:`~boxyard.Client`. Use it as ``async with AsyncClient() as c:`` (or call :meth:`close`).
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
        self._t = _AsyncTransport(
            self.url,
            self._key,
            timeout=timeout,
            connect_timeout=connect_timeout,
            retry=RetryPolicy(deadline=retry_deadline),
        )
        self.boxes = AsyncBoxes(self)
        """Boxes: create, get, list."""
        self.snapshots = AsyncSnapshots(self)
        """Snapshots (org admins create, upload and delete them)."""
        self.keys = AsyncKeys(self)
        """The API keys of the caller's org (org admins)."""
        self.admin = AsyncAdmin(self)
        """Platform administration (platform admins)."""

    def __repr__(self) -> str:
        return f"<boxyard.AsyncClient {self.url}>"

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the client's HTTP connections."""
        await self._t.close()

    async def me(self) -> Me:
        """The caller: its key, org and role (``GET /v1/me``)."""
        return Me.from_json(await self._t.json(rq.get("/v1/me")))

    async def config(self) -> PlatformConfig:
        """The platform's version and defaults, and the caller's quota (``GET /v1/config``)."""
        return PlatformConfig.from_json(await self._t.json(rq.get("/v1/config")))

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Optional[Dict[str, Any]] = None
    ) -> Any:
        """Any endpoint, as JSON (see :meth:`Client.request <boxyard.Client.request>`)."""
        m = method.upper()
        call = rq.Call(m, path, params=params, json=json, replay_safe=m in ("GET", "HEAD", "PUT", "DELETE"))
        return await self._t.json(call)


# --- boxes ----------------------------------------------------------------------------------------------------------


class BoxCreation:
    """What :meth:`AsyncBoxes.create` returns: await it for the box (``box = await client.boxes.create()``), or use it
    as an async context manager that deletes the box on exit (``async with client.boxes.create() as box:``)."""

    def __init__(self, make: Callable[[], "asyncio.Future[AsyncBox] | Any"]) -> None:
        self._make = make
        self._box: Optional[AsyncBox] = None

    async def _get(self) -> "AsyncBox":
        if self._box is None:
            self._box = await self._make()
        return self._box

    def __await__(self) -> Generator[Any, None, "AsyncBox"]:
        return self._get().__await__()

    async def __aenter__(self) -> "AsyncBox":
        return await self._get()

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._box is not None:
            await self._box.__aexit__(exc_type, exc, tb)


class AsyncBoxes:
    """The boxes of the caller's org (``client.boxes``)."""

    def __init__(self, client: AsyncClient) -> None:
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
    ) -> BoxCreation:
        """Creates a box (see :meth:`Boxes.create <boxyard.Boxes.create>` for the arguments). Await the result, or
        use it with ``async with`` to delete the box at the end."""
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
        call = rq.create("/v1/boxes", body, params)

        async def make() -> AsyncBox:
            return AsyncBox(self._client, BoxInfo.from_json(await self._client._t.json(call)))

        return BoxCreation(make)

    async def get(self, box_id: str) -> "AsyncBox":
        """A box by id (``NotFoundError`` if it does not exist or was deleted)."""
        data = await self._client._t.json(rq.get(f"/v1/boxes/{rq.seg(box_id)}"))
        return AsyncBox(self._client, BoxInfo.from_json(data))

    async def list(
        self,
        *,
        state: Optional[str] = None,
        label: Union[str, Tuple[str, str], None] = None,
        page_size: Optional[int] = None,
    ) -> AsyncIterator["AsyncBox"]:
        """Every box of the org, oldest first, page after page (``async for box in client.boxes.list():``).
        Filters as in :meth:`Boxes.list <boxyard.Boxes.list>`."""
        params: Dict[str, Any] = {}
        if state is not None:
            params["state"] = state
        lp = rq.label_param(label)
        if lp is not None:
            params["label"] = lp
        if page_size is not None:
            params["limit"] = page_size
        while True:
            page = await self._client._t.json(rq.get("/v1/boxes", dict(params)))
            for item in page.get("items", []):
                yield AsyncBox(self._client, BoxInfo.from_json(item))
            cursor = page.get("next_cursor")
            if not cursor:
                return
            params["cursor"] = cursor


class AsyncBox(BoxFields):
    """A box (asyncio): the surface of :class:`~boxyard.Box`, every call awaited; ``async with`` deletes it."""

    def __init__(self, client: AsyncClient, info: BoxInfo) -> None:
        self._client = client
        self._info = info
        self.files = AsyncFiles(self)
        """Files in the box: write, read, upload, download."""

    async def __aenter__(self) -> "AsyncBox":
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            await self.delete()
        except NotFoundError:
            pass
        except BoxyardError:
            if exc_type is None:
                raise
            log.warning("boxyard: could not delete box %s after an error", self.id, exc_info=True)

    def _path(self, rest: str = "") -> str:
        return f"/v1/boxes/{rq.seg(self.id)}{rest}"

    def _update(self, data: Any) -> "AsyncBox":
        self._info = BoxInfo.from_json(data)
        return self

    async def refresh(self) -> "AsyncBox":
        """Reads the box again; returns it."""
        return self._update(await self._client._t.json(rq.get(self._path())))

    async def start(self) -> "AsyncBox":
        """Boots a stopped box again and returns once it runs."""
        return self._update(await self._client._t.json(rq.post(self._path("/start"), replay_safe=True)))

    async def stop(self) -> "AsyncBox":
        """Powers the box off; its disk is kept."""
        return self._update(await self._client._t.json(rq.post(self._path("/stop"), replay_safe=True)))

    async def delete(self) -> None:
        """Deletes the box, running or not. ``NotFoundError`` if it was already deleted."""
        await self._client._t.send(rq.delete(self._path()))

    async def wait_until_running(self, timeout: float = 300.0, poll: float = 0.5) -> "AsyncBox":
        """Polls until the box runs (see :meth:`Box.wait_until_running <boxyard.Box.wait_until_running>`)."""
        deadline = time.monotonic() + timeout
        while True:
            await self.refresh()
            if self.state == "running":
                return self
            if self.state in ("error", "lost", "stopped"):
                raise BoxyardError(f"box {self.id} is {self.state}: {self.reason or 'no reason given'}")
            if time.monotonic() + poll > deadline:
                raise WaitTimeout(f"box {self.id} is still {self.state} after {timeout} s")
            await asyncio.sleep(poll)

    async def exec(
        self,
        command: rq.Command,
        *,
        stdin: bool = False,
        tty: TtyLike = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> "AsyncExecution":
        """Starts a command and returns a handle at once (see :meth:`Box.exec <boxyard.Box.exec>`)."""
        body = rq.create_execution_body(
            command=command,
            env=env,
            working_dir=cwd,
            user=user,
            tty=tty_size(tty),
            stdin=stdin,
            timeout_ms=rq.timeout_ms(timeout),
        )
        info = ExecutionInfo.from_json(await self._client._t.json(rq.create(self._path("/executions"), body)))
        return AsyncExecution(self, info.id, info=info)

    async def run(
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
        """Runs a command to its end and returns its result (see :meth:`Box.run <boxyard.Box.run>`). The callbacks
        are plain functions, called in the event loop as text arrives."""
        ex = await self.exec(command, stdin=stdin is not None, env=env, cwd=cwd, user=user, timeout=timeout)
        try:
            if stdin is not None:
                await ex._queue_input(stdin_bytes(stdin), eof=True)
            return await ex._collect(Collector(on_stdout, on_stderr), None)
        finally:
            await ex.close()

    async def execution(self, execution_id: str, cursor: int = 0) -> "AsyncExecution":
        """A handle for an existing execution, following its output from ``cursor``."""
        data = await self._client._t.json(rq.get(self._path(f"/executions/{rq.seg(execution_id)}")))
        return AsyncExecution(self, execution_id, cursor=cursor, info=ExecutionInfo.from_json(data))

    async def executions(
        self, *, state: Optional[str] = None, page_size: Optional[int] = None
    ) -> AsyncIterator[ExecutionInfo]:
        """The box's executions, oldest first (``async for``)."""
        params: Dict[str, Any] = {}
        if state is not None:
            params["state"] = state
        if page_size is not None:
            params["limit"] = page_size
        while True:
            page = await self._client._t.json(rq.get(self._path("/executions"), dict(params)))
            for item in page.get("items", []):
                yield ExecutionInfo.from_json(item)
            cursor = page.get("next_cursor")
            if not cursor:
                return
            params["cursor"] = cursor


# --- executions -----------------------------------------------------------------------------------------------------


class _Conn:
    """One WebSocket of an attach, and its stdin writer task (started once input is used)."""

    __slots__ = ("ws", "writer", "wake")

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.writer: Optional["asyncio.Task[None]"] = None
        self.wake = asyncio.Event()


class AsyncExecution:
    """An execution (asyncio): the surface of :class:`~boxyard.Execution`, every call awaited; iterate its output
    with ``async for chunk in execution``."""

    def __init__(
        self, box: AsyncBox, execution_id: str, *, cursor: int = 0, info: Optional[ExecutionInfo] = None
    ) -> None:
        self._box = box
        self._client = box._client
        self.id = execution_id
        """The execution's id."""
        self.box_id = box.id
        """The box it runs in."""
        self.info = info
        """The execution as last read from the API."""
        self._state = AttachState(execution_id, cursor, max_retries=self._client.attach_retries)
        self._conn: Optional[_Conn] = None
        self._connect_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()
        self._progress = asyncio.Event()
        self._collector: Optional[Collector] = None
        self._result: Optional[ExecutionResult] = None

    def __repr__(self) -> str:
        return f"<boxyard.AsyncExecution {self.id} cursor={self.cursor}>"

    async def __aenter__(self) -> "AsyncExecution":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def cursor(self) -> int:
        """The cursor after the last output byte handed out."""
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

    async def refresh(self) -> ExecutionInfo:
        """Reads the execution again."""
        self.info = ExecutionInfo.from_json(await self._client._t.json(rq.get(self._path())))
        return self.info

    async def signal(self, name: Union[str, int]) -> None:
        """Sends a signal (``"INT"``, ``"SIGTERM"``, a number) to the process group."""
        await self._client._t.send(rq.post(self._path("/signal"), {"signal": str(name)}))

    async def resize(self, rows: int, cols: int) -> None:
        """Resizes the terminal of a tty execution."""
        body = {"rows": int(rows), "cols": int(cols)}
        await self._client._t.send(rq.post(self._path("/resize"), body, replay_safe=True))

    async def kill(self) -> ExecutionInfo:
        """Kills the process group (SIGKILL); returns the execution."""
        data = await self._client._t.json(rq.post(self._path("/kill"), replay_safe=True))
        self.info = ExecutionInfo.from_json(data)
        return self.info

    # -- the connection ------------------------------------------------------------------------------------------

    async def _connect(self, deadline: Optional[float]) -> _Conn:
        async with self._connect_lock:
            st = self._state
            while True:
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
                    await asyncio.sleep(wait)
                try:
                    ws = await ws_connect(
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
                    if r.status_code >= 500 or r.status_code == 429:
                        st.failed(str(err), err.retry_after)
                        continue
                    raise st.fail(err) from None
                except InvalidURI as e:
                    raise st.fail(ConfigError(f"bad attach URL {url}: {e}")) from e
                except (OSError, InvalidHandshake, EOFError, asyncio.TimeoutError) as e:
                    st.failed(f"cannot connect: {e!r}")
                    continue
                st.connected(ws.response.headers.get(STDIN_OFFSET_HEADER) if ws.response else None)
                conn = _Conn(ws)
                self._conn = conn
                if st.stdin.used:
                    self._start_writer(conn)
                self._progress.set()
                return conn

    def _drop(self, conn: _Conn, why: Optional[str], *, abort: bool = True) -> None:
        """Gives up a connection (``why``: the cut, counted against the retry budget; None: on purpose); ``abort``:
        close it at once (not after the exit, which the server closes itself)."""
        if self._conn is conn:
            self._conn = None
            if why is not None and not self._state.done:
                self._state.cut(why)
            self._progress.set()
        conn.wake.set()
        if conn.writer is not None and conn.writer is not asyncio.current_task():
            conn.writer.cancel()
        transport = conn.ws.transport
        if abort and transport is not None:
            transport.abort()

    # -- input ---------------------------------------------------------------------------------------------------

    def _start_writer(self, conn: _Conn) -> None:
        if conn.writer is None:
            conn.writer = asyncio.ensure_future(self._write_loop(conn))
        conn.wake.set()

    async def _write_loop(self, conn: _Conn) -> None:
        stdin = self._state.stdin
        try:
            while self._conn is conn:
                item = stdin.take()
                if item is None:
                    conn.wake.clear()
                    await conn.wake.wait()
                    continue
                self._progress.set()
                declare, frame = item
                if declare is not None:
                    await conn.ws.send(declare)
                await conn.ws.send(frame)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure to send is a cut; the reader reconnects
            self._drop(conn, f"the connection broke while sending input ({e!r})")

    def _check_input(self) -> None:
        refused = self._state.stdin.refused
        if refused is not None:
            raise ConflictError(409, refused[0], refused[1])
        if self._state.exit is not None or execution_finished(self.info):
            raise finished_error(self.id)
        if self.info is not None and not self.info.stdin:
            raise no_stdin_error(self.id)

    async def _queue_input(self, data: bytes, *, eof: bool) -> None:
        if data:
            self._state.stdin.append(data)
        if eof:
            self._state.stdin.close()
        await self._pump(backpressure=False)

    async def _pump(self, *, backpressure: bool) -> None:
        st = self._state
        while True:
            if st.exit is not None:
                return
            if st.fatal is not None:
                raise st.fatal
            conn = self._conn
            if conn is None:
                if backpressure and st.connections > 0 and not self._read_lock.locked():
                    # Cut while waiting for room, with nobody reading: the process may have ended.
                    if (await self.refresh()).state != "running":
                        raise finished_error(self.id)
                await self._connect(None)
                continue
            self._start_writer(conn)
            if not backpressure or st.stdin.unsent <= MAX_UNSENT:
                return
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    async def send_stdin(self, data: StdinData) -> None:
        """Sends input to the process's stdin (see :meth:`Execution.send_stdin <boxyard.Execution.send_stdin>`)."""
        b = stdin_bytes(data)
        self._check_input()
        if self._state.stdin.eof:
            raise BoxyardError("stdin was closed with close_stdin(): no more input can be sent")
        self._state.stdin.append(b)
        await self._pump(backpressure=True)

    async def close_stdin(self) -> None:
        """Closes the process's stdin after the input sent before."""
        if self._state.exit is not None or execution_finished(self.info):
            return
        if self.info is not None and not self.info.stdin:
            raise no_stdin_error(self.id)
        await self._queue_input(b"", eof=True)

    # -- output --------------------------------------------------------------------------------------------------

    async def _next(self, deadline: Optional[float]) -> Optional[OutputChunk]:
        async with self._read_lock:
            st = self._state
            while True:
                if st.exit is not None:
                    return None
                if st.fatal is not None:
                    raise st.fatal
                conn = await self._connect(deadline)
                try:
                    if deadline is None:
                        msg = await conn.ws.recv()
                    else:
                        msg = await asyncio.wait_for(conn.ws.recv(), max(0.0, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    raise WaitTimeout(f"execution {self.id} did not finish in time") from None
                except ConnectionClosed as e:
                    self._drop(conn, f"the connection closed before the exit message ({e})")
                    continue
                except OSError as e:
                    self._drop(conn, f"the connection failed before the exit message ({e!r})")
                    continue
                try:
                    ev = st.on_text(msg) if isinstance(msg, str) else st.on_binary(msg)
                except BaseException:
                    self._drop(conn, None)
                    raise
                self._progress.set()
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
                    self._drop(conn, None, abort=False)
                    return None

    def __aiter__(self) -> "AsyncExecution":
        return self

    async def __anext__(self) -> OutputChunk:
        chunk = await self._next(None)
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def _collect(self, collector: Collector, timeout: Optional[float]) -> ExecutionResult:
        if self._result is not None:
            return self._result
        if self._collector is None:
            self._collector = collector
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            chunk = await self._next(deadline)
            if chunk is None:
                break
            self._collector.feed(chunk)
        assert self._state.exit is not None
        self._result = self._collector.finish(self.id, self._state.exit, self._state.gaps)
        return self._result

    async def wait(self, timeout: Optional[float] = None) -> ExecutionResult:
        """Reads the output to the end and returns the result (see :meth:`Execution.wait
        <boxyard.Execution.wait>`)."""
        return await self._collect(Collector(), timeout)

    async def close(self) -> None:
        """Detaches (the execution goes on). Input still queued is given a few seconds to go out first."""
        end = time.monotonic() + 5.0
        while self._conn is not None and self._state.stdin.pending() and time.monotonic() < end:
            await asyncio.sleep(0.05)
        conn = self._conn
        if conn is not None:
            self._drop(conn, None, abort=False)
            try:
                await asyncio.wait_for(conn.ws.close(), 3.0)
            except Exception:  # noqa: BLE001 - a connection that fails to close is gone all the same
                if conn.ws.transport is not None:
                    conn.ws.transport.abort()


# --- files ----------------------------------------------------------------------------------------------------------


def _split_remote(path: str) -> Tuple[str, str]:
    if not path.startswith("/"):
        raise ValueError(f"a path in the box must be absolute (got {path!r})")
    if path.endswith("/"):
        raise ValueError(f"{path!r} names a directory; give the file's path")
    parent, name = path.rsplit("/", 1)
    return parent or "/", name


class _Abort:
    """Tells the extracting thread that the download broke off."""

    def __init__(self, err: BaseException) -> None:
        self.err = err


def _drain(q: "queue.Queue[Union[bytes, None, _Abort]]") -> Iterator[bytes]:
    while True:
        item = q.get()
        if item is None:
            return
        if isinstance(item, _Abort):
            raise item.err
        yield item


class AsyncFiles:
    """Files in a box (asyncio): the surface of :class:`~boxyard.Files`, every call awaited. Local disk work
    (reading files to upload, unpacking a download) runs in a worker thread."""

    def __init__(self, box: AsyncBox) -> None:
        self._box = box

    async def _put_tar(self, remote_dir: str, make: Callable[[], _Content]) -> UploadResult:
        call = rq.Call(
            "PUT",
            self._box._path("/files"),
            params={"path": remote_dir},
            content=make,
            content_type="application/x-tar",
            replay_safe=True,
        )
        return UploadResult.from_json(await self._box._client._t.json(call))

    async def write(self, path: str, data: Union[str, bytes], *, mode: int = 0o644) -> None:
        """Writes a file (text as UTF-8, or bytes), replacing it; its directory is created if missing."""
        parent, name = _split_remote(path)
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        archive = single_file_tar(name, raw, mode)
        await self._put_tar(parent, lambda: archive)

    async def read(self, path: str) -> bytes:
        """A file's bytes (``IsADirectoryError`` for a directory)."""
        call = rq.get(self._box._path("/files"), {"path": path})
        resp = await self._box._client._t.send(call, stream=True)
        assert resp is not None
        try:
            body = await resp.aread()
        except httpx.TransportError as e:
            raise TransportError(f"reading {path} broke off: {e!r}", url=self._box._client.url) from e
        finally:
            await resp.aclose()
        return read_single_file(io.BytesIO(body), path)

    async def upload(self, local_path: Union[str, "os.PathLike[str]"], remote_dir: str) -> UploadResult:
        """Uploads a local file or directory tree into the directory ``remote_dir`` of the box (streamed)."""
        if not os.path.lexists(local_path):
            raise FileNotFoundError(f"{local_path} does not exist")
        return await self._put_tar(remote_dir, lambda: iter_tar(local_path))

    async def download(self, remote_path: str, local_dir: Union[str, "os.PathLike[str]"]) -> List[Path]:
        """Downloads a file or directory of the box into ``local_dir``; returns the paths written. The archive is
        unpacked by ``tarfile`` in stream mode in a worker thread as it arrives."""
        call = rq.get(self._box._path("/files"), {"path": remote_path})
        resp = await self._box._client._t.send(call, stream=True)
        assert resp is not None
        q: "queue.Queue[Union[bytes, None, _Abort]]" = queue.Queue(maxsize=16)
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(None, lambda: extract_stream(ChunkReader(_drain(q)), local_dir))  # type: ignore[arg-type]

        async def feed(item: Union[bytes, None, _Abort]) -> None:
            while True:
                try:
                    q.put_nowait(item)
                    return
                except queue.Full:
                    if job.done():
                        return
                    await asyncio.sleep(0.005)

        try:
            async for piece in resp.aiter_bytes():
                await feed(piece)
                if job.done():
                    break
            await feed(None)
        except BaseException as e:
            while True:
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
            q.put_nowait(_Abort(e if isinstance(e, Exception) else BoxyardError("the download was cancelled")))
            try:
                await job
            except BaseException:
                pass
            if isinstance(e, httpx.TransportError):
                raise TransportError(f"downloading {remote_path} broke off: {e!r}", url=self._box._client.url) from e
            raise
        finally:
            await resp.aclose()
        return await job


# --- snapshots, keys ------------------------------------------------------------------------------------------------


class AsyncSnapshots:
    """Snapshots (asyncio): the surface of :class:`~boxyard.Snapshots`, every call awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        name: str,
        *,
        metadata: Union[SnapshotMetadata, Mapping[str, Any], None] = None,
        public: bool = False,
        source: Union[Tuple[str, str], Mapping[str, str], None] = None,
    ) -> Snapshot:
        """Registers a snapshot (see :meth:`Snapshots.create <boxyard.Snapshots.create>`)."""
        body = rq.create_snapshot_body(name, metadata=metadata_of(metadata), public=public, source=source_of(source))
        return Snapshot.from_json(await self._client._t.json(rq.post("/v1/snapshots", body)))

    async def upload_image(
        self,
        snapshot_id: str,
        image: ImageSource,
        *,
        on_progress: Optional[Callable[[int, Optional[int]], None]] = None,
    ) -> Snapshot:
        """Streams an image into a new snapshot; returns it ``active``. ``on_progress(sent, total)`` is called in
        the event loop; the file is read in a worker thread."""
        reader = image_reader(image, None)
        loop = asyncio.get_running_loop()

        async def body() -> AsyncIterator[bytes]:
            it = reader.chunks()
            sent = 0
            if on_progress is not None:
                on_progress(0, reader.total)
            while True:
                piece = await loop.run_in_executor(None, next, it, None)
                if piece is None:
                    return
                sent += len(piece)
                yield piece
                if on_progress is not None:
                    on_progress(sent, reader.total)

        call = rq.Call(
            "PUT",
            f"/v1/snapshots/{rq.seg(snapshot_id)}/image",
            acontent=body,
            content_type="application/octet-stream",
        )
        return Snapshot.from_json(await self._client._t.json(call))

    async def list(self) -> List[Snapshot]:
        """The snapshots the caller can use."""
        data = await self._client._t.json(rq.get("/v1/snapshots"))
        return [Snapshot.from_json(s) for s in data.get("items", [])]

    async def get(self, snapshot_id: str) -> Snapshot:
        """A snapshot by id."""
        return Snapshot.from_json(await self._client._t.json(rq.get(f"/v1/snapshots/{rq.seg(snapshot_id)}")))

    async def delete(self, snapshot_id: str) -> None:
        """Deletes a snapshot that no box uses."""
        await self._client._t.send(rq.delete(f"/v1/snapshots/{rq.seg(snapshot_id)}"))


class AsyncKeys:
    """The API keys of the caller's org (asyncio; org admins)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(self, name: str, *, role: Optional[str] = None) -> Key:
        """Creates a key; its ``secret`` is in this answer only."""
        return Key.from_json(await self._client._t.json(rq.post("/v1/keys", rq.create_key_body(name, role))))

    async def list(self) -> List[Key]:
        """The org's keys, revoked ones included."""
        return [Key.from_json(k) for k in (await self._client._t.json(rq.get("/v1/keys"))).get("items", [])]

    async def revoke(self, key_id: str) -> Key:
        """Revokes a key."""
        return Key.from_json(await self._client._t.json(rq.delete(f"/v1/keys/{rq.seg(key_id)}", gone_is_done=False)))


# --- platform administration ----------------------------------------------------------------------------------------


class AsyncAdmin:
    """Platform administration (asyncio): the surface of :class:`~boxyard.Admin`, every call awaited."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def _json(self, call: rq.Call) -> Any:
        return await self._client._t.json(call)

    async def _items(self, path: str, params: Optional[Dict[str, Any]] = None) -> List[Any]:
        data = await self._json(rq.get(path, params))
        items: List[Any] = data.get("items", [])
        return items

    async def create_org(self, name: str, *, quota: Optional[Quota] = None) -> Org:
        """Creates an org."""
        return Org.from_json(await self._json(rq.post("/v1/admin/orgs", rq.create_org_body(name, quota))))

    async def list_orgs(self) -> List[Org]:
        """Every org."""
        return [Org.from_json(o) for o in await self._items("/v1/admin/orgs")]

    async def get_org(self, org_id: str) -> Org:
        """An org."""
        return Org.from_json(await self._json(rq.get(f"/v1/admin/orgs/{rq.seg(org_id)}")))

    async def delete_org(self, org_id: str) -> None:
        """Deletes an org without boxes and snapshots."""
        await self._client._t.send(rq.delete(f"/v1/admin/orgs/{rq.seg(org_id)}"))

    async def set_quota(self, org_id: str, quota: Quota) -> Org:
        """Sets an org's quota."""
        path = f"/v1/admin/orgs/{rq.seg(org_id)}/quota"
        return Org.from_json(await self._json(rq.put_json(path, quota.to_json())))

    async def create_org_key(self, org_id: str, name: str, *, role: Optional[str] = None) -> Key:
        """Creates a key in any org; its ``secret`` is in this answer only."""
        body = rq.create_key_body(name, role)
        return Key.from_json(await self._json(rq.post(f"/v1/admin/orgs/{rq.seg(org_id)}/keys", body)))

    async def list_org_keys(self, org_id: str) -> List[Key]:
        """The keys of any org."""
        return [Key.from_json(k) for k in await self._items(f"/v1/admin/orgs/{rq.seg(org_id)}/keys")]

    async def revoke_org_key(self, org_id: str, key_id: str) -> Key:
        """Revokes a key of any org."""
        path = f"/v1/admin/orgs/{rq.seg(org_id)}/keys/{rq.seg(key_id)}"
        return Key.from_json(await self._json(rq.delete(path, gone_is_done=False)))

    async def list_runners(self) -> List[Runner]:
        """The runners of the fleet."""
        return [Runner.from_json(r) for r in await self._items("/v1/admin/runners")]

    async def get_runner(self, runner_id: str) -> Runner:
        """A runner."""
        return Runner.from_json(await self._json(rq.get(f"/v1/admin/runners/{rq.seg(runner_id)}")))

    async def cordon_runner(self, runner_id: str) -> Runner:
        """Cordons a runner: no new boxes."""
        path = f"/v1/admin/runners/{rq.seg(runner_id)}/cordon"
        return Runner.from_json(await self._json(rq.post(path, replay_safe=True)))

    async def drain_runner(self, runner_id: str) -> Runner:
        """Drains a runner."""
        path = f"/v1/admin/runners/{rq.seg(runner_id)}/drain"
        return Runner.from_json(await self._json(rq.post(path, replay_safe=True)))

    async def uncordon_runner(self, runner_id: str) -> Runner:
        """Puts a cordoned or drained runner back in service."""
        path = f"/v1/admin/runners/{rq.seg(runner_id)}/uncordon"
        return Runner.from_json(await self._json(rq.post(path, replay_safe=True)))

    async def delete_runner(self, runner_id: str) -> None:
        """Removes a runner without boxes."""
        await self._client._t.send(rq.delete(f"/v1/admin/runners/{rq.seg(runner_id)}"))

    async def create_join_token(self, *, description: str = "", ttl_seconds: Optional[int] = None) -> JoinToken:
        """Issues a runner join token; its ``secret`` is in this answer only."""
        body: Dict[str, Any] = {}
        if description:
            body["description"] = description
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        return JoinToken.from_json(await self._json(rq.post("/v1/admin/join-tokens", body)))

    async def list_join_tokens(self) -> List[JoinToken]:
        """Every join token."""
        return [JoinToken.from_json(t) for t in await self._items("/v1/admin/join-tokens")]

    async def revoke_join_token(self, token_id: str) -> JoinToken:
        """Revokes a join token."""
        path = f"/v1/admin/join-tokens/{rq.seg(token_id)}"
        return JoinToken.from_json(await self._json(rq.delete(path, gone_is_done=False)))

    async def audit_log(self, *, limit: Optional[int] = None) -> List[AuditEntry]:
        """The audit log, newest first."""
        params = {"limit": limit} if limit is not None else None
        return [AuditEntry.from_json(e) for e in await self._items("/v1/admin/audit", params)]
