"""A TCP proxy for the tests, on loopback: it forwards to the API and can break connections on purpose.

- ``cut_websockets = (lo, hi)``: every WebSocket connection (an upgrade request) is cut after a random number of
  bytes in ``[lo, hi]`` (both directions counted), possibly in the middle of a frame.
- ``drop_response_of(prefix)``: the first request whose request line starts with ``prefix`` reaches the API, but its
  response is never delivered: the client's connection is closed as the response starts to arrive (or, with
  ``at_once``, right after the request was forwarded, while the API is still working on it).
"""

from __future__ import annotations

import random
import socket
import threading
from typing import List, Optional, Tuple


class _Pair:
    """One proxied connection: the client's socket and the upstream one."""

    def __init__(self, client: socket.socket, upstream: socket.socket, budget: Optional[int]) -> None:
        self.client = client
        self.upstream = upstream
        self.budget = budget  # bytes left before a cut (None: no cut planned yet)
        self.kind_known = False
        self.drop_response = False
        self.drop_at_once = False
        self.timer = False
        self.closed = False
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for s in (self.client, self.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass


class CuttingProxy:
    """A threaded TCP proxy from ``127.0.0.1:<port>`` to ``upstream``."""

    def __init__(self, upstream_host: str, upstream_port: int, *, seed: Optional[int] = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rng = random.Random(seed)
        self.cut_websockets: Optional[Tuple[int, int]] = None
        self._drop_prefix: Optional[bytes] = None
        self._drop_at_once = False
        self.cuts = 0
        self.dropped = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._pairs: List[_Pair] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._accept_loop, name="test-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def drop_response_of(self, request_line_prefix: bytes, *, at_once: bool = False) -> None:
        """Arms the one-shot drop of the response to the next request starting with this prefix."""
        with self._lock:
            self._drop_prefix = request_line_prefix
            self._drop_at_once = at_once

    def reset(self) -> None:
        with self._lock:
            self.cut_websockets = None
            self._drop_prefix = None
            self.cuts = 0
            self.dropped = 0

    def close(self) -> None:
        self._stop = True
        try:
            self._sock.close()
        except OSError:
            pass
        with self._lock:
            pairs = list(self._pairs)
        for p in pairs:
            p.close()

    def _accept_loop(self) -> None:
        while not self._stop:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(client, upstream, None)
            with self._lock:
                self.connections += 1
                self._pairs.append(pair)
                self._pairs = [p for p in self._pairs if not p.closed]
            threading.Thread(target=self._pump, args=(pair, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(pair, False), daemon=True).start()

    def _cut(self, pair: _Pair) -> None:
        with self._lock:
            self.cuts += 1
        pair.close()

    def _pump(self, pair: _Pair, client_to_upstream: bool) -> None:
        src, dst = (pair.client, pair.upstream) if client_to_upstream else (pair.upstream, pair.client)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if client_to_upstream:
                    self._inspect_request(pair, data)
                    if pair.drop_at_once and not pair.timer:
                        pair.timer = True
                        with self._lock:
                            self.dropped += 1
                        # The request (headers and body) goes on to the API; then the connection goes, before the
                        # API has answered.
                        threading.Timer(0.3, pair.close).start()
                elif pair.drop_response:
                    if not pair.drop_at_once:
                        with self._lock:
                            self.dropped += 1
                    pair.close()
                    return
                with pair.lock:
                    budget = pair.budget
                    if budget is not None:
                        pair.budget = budget - len(data)
                if budget is not None and budget <= len(data):
                    if budget > 0:
                        dst.sendall(data[:budget])
                    self._cut(pair)
                    return
                dst.sendall(data)
        except OSError:
            pass
        # One side ended: end the other (half-close semantics are not needed by HTTP/1.1 or WebSocket clients).
        pair.close()

    def _inspect_request(self, pair: _Pair, data: bytes) -> None:
        with self._lock:
            prefix = self._drop_prefix
            if prefix is not None and data.startswith(prefix):
                self._drop_prefix = None
                pair.drop_response = True
                pair.drop_at_once = self._drop_at_once
            if not pair.kind_known:
                pair.kind_known = True
                cut = self.cut_websockets
                if cut is not None and b"upgrade: websocket" in data.lower():
                    pair.budget = self.rng.randint(cut[0], cut[1])
