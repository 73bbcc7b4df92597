"""A small HTTP/1.1 keep-alive client for ARI's REST requests, on asyncio protocols.

ARI requests sit on the key press hot path. Profiled under load (``bench/profile_hot.py``),
a general-purpose client (aiohttp: request and response objects, header multidicts, URL
objects, tracing hooks, a timer context per request) cost more CPU per key press than the
rest of the daemon together. This one does what ARI needs and nothing else: one request at
a time per connection, a pool of idle connections, the fixed headers encoded once, bodies
framed by ``Content-Length`` or chunked, a deadline per request. The events websocket and
the admin API stay on aiohttp.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from urllib.parse import urlsplit

__all__ = ["HttpPool", "HttpProtocolError"]

# Close connections idle this long: Asterisk closes idle HTTP sessions after 15 s
# (http.conf session_keep_alive), and a request written into a closing one is lost.
IDLE_SECONDS = 10.0
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
# Request deadlines are checked by one sweep this often while requests are in flight, not
# by a timer per request (a timer per request was a heap push and a cancel per key press).
# A request times out at most this late.
SWEEP_SECONDS = 0.05


class HttpProtocolError(Exception):
    """The server's response could not be read as HTTP/1.1, or the connection broke."""


class _Connection(asyncio.Protocol):
    """One TCP connection; at most one request in flight."""

    __slots__ = (
        "_buf",
        "_chunked",
        "_head_done",
        "_length",
        "_status",
        "_waiter",
        "closed",
        "keep_alive",
        "last_used",
        "transport",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.keep_alive = True
        self.last_used = time.monotonic()
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._head_done = False
        self._status = 0
        self._length: int | None = None
        self._chunked = False

    # ---- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for: the connection is unusable
            self.close()
            return
        self._buf += data
        try:
            self._parse()
        except HttpProtocolError as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        if self._waiter is not None and self._head_done and self._length is None \
                and not self._chunked:
            # A body delimited by the end of the connection.
            self._finish(bytes(self._buf))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(HttpProtocolError(f"connection closed by the server{f': {exc}' if exc else ''}"))

    # ---- requests -----------------------------------------------------------------------

    def send(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None and self._waiter is None
        waiter: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._buf.clear()
        self._head_done = False
        self._length = None
        self._chunked = False
        self.transport.write(data)
        return waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _finish(self, body: bytes) -> None:
        waiter, self._waiter = self._waiter, None
        self.last_used = time.monotonic()
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, body))

    def _fail(self, exc: Exception) -> None:
        waiter, self._waiter = self._waiter, None
        self.keep_alive = False
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if not self.closed:
            self.close()

    def _parse(self) -> None:
        buf = self._buf
        if not self._head_done:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise HttpProtocolError("response head too large")
                return
            self._read_head(bytes(buf[:end]))
            del buf[: end + 4]
            self._head_done = True
        if self._chunked:
            body = _dechunk(buf)
            if body is not None:
                self._finish(body)
        elif self._length is not None:
            if len(buf) >= self._length:
                self._finish(bytes(buf[: self._length]))
        elif self._status in (204, 304) or 100 <= self._status < 200:
            self._finish(b"")
        elif len(buf) > MAX_BODY_BYTES:
            raise HttpProtocolError("response body too large")

    def _read_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise HttpProtocolError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        self._status = int(parts[1])
        if parts[0] == b"HTTP/1.0":
            self.keep_alive = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                try:
                    self._length = int(value.strip())
                except ValueError:
                    raise HttpProtocolError("bad Content-Length") from None
                if self._length < 0 or self._length > MAX_BODY_BYTES:
                    raise HttpProtocolError("bad Content-Length")
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
            elif key == b"connection":
                token = value.strip().lower()
                if token == b"close":
                    self.keep_alive = False
                elif token == b"keep-alive":
                    self.keep_alive = True
        if self._length is None and not self._chunked and self._status not in (204, 304) \
                and not 100 <= self._status < 200:
            self.keep_alive = False  # the body ends with the connection


_HEX_DIGITS = b"0123456789abcdefABCDEF"


def _dechunk(buf: bytearray) -> bytes | None:
    """The whole body of a chunked message in ``buf``, or None if more is needed."""
    body = bytearray()
    pos = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
        # Hex digits only: int() also takes "-6", "+6", "0x6", "1_0", and a negative size
        # sent this loop backwards, forever.
        if not size_text or size_text.strip(_HEX_DIGITS):
            raise HttpProtocolError("bad chunk size")
        size = int(size_text, 16)
        if size == 0:
            trailer_end = buf.find(b"\r\n\r\n", eol)
            if trailer_end < 0 and buf[eol: eol + 4] != b"\r\n\r\n":
                return None
            return bytes(body)
        start, end = eol + 2, eol + 2 + size
        if len(buf) < end + 2:
            if end > MAX_BODY_BYTES:
                raise HttpProtocolError("response body too large")
            return None
        body += buf[start:end]
        pos = end + 2


class HttpPool:
    """Keep-alive connections to one HTTP server; at most ``limit`` open at once (callers
    beyond that wait for one to come back)."""

    def __init__(self, base_url: str, headers: dict[str, str], *, limit: int = 50) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path_prefix = parts.path.rstrip("/")
        self._ssl: ssl.SSLContext | None = (
            ssl.create_default_context() if parts.scheme == "https" else None)
        host_header = f"[{self.host}]" if ":" in self.host else self.host
        if parts.port:
            host_header += f":{parts.port}"
        fixed = [f"Host: {host_header}"]
        fixed += [f"{k}: {v}" for k, v in headers.items()]
        self._fixed = "\r\n".join(fixed) + "\r\n"
        self.limit = limit
        self._idle: deque[_Connection] = deque()
        self._open = 0
        # Requests waiting for a free connection, with their deadlines.
        self._waiters: deque[tuple[asyncio.Future[None], float]] = deque()
        self._waiters_in_order = True  # their deadlines never decrease along the queue
        self._closed = False
        # In-flight requests (at most ``limit``: one per connection) and their deadlines.
        self._inflight: dict[asyncio.Future[tuple[int, bytes]], float] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    async def request(self, method: str, target: str, body: bytes | None,
                      timeout: float) -> tuple[int, bytes]:
        """Send one request (``target``: path and query under the base URL, encoded);
        return (status, body). Raises TimeoutError, OSError or HttpProtocolError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        conn = await self._acquire(deadline)
        head = f"{method} {self.path_prefix}{target} HTTP/1.1\r\n{self._fixed}"
        if body is None:
            data = (head + ("Content-Length: 0\r\n\r\n" if method in ("POST", "PUT")
                            else "\r\n")).encode("latin-1")
        else:
            data = (head + f"Content-Type: application/json\r\nContent-Length: {len(body)}"
                    "\r\n\r\n").encode("latin-1") + body
        waiter = conn.send(data)
        inflight = self._inflight
        inflight[waiter] = deadline
        if self._sweeper is None:
            self._sweeper = loop.call_later(SWEEP_SECONDS, self._sweep)
        try:
            result = await waiter
        except BaseException:
            conn.close()  # a response may still come: never reuse this connection
            self._release(conn)
            raise
        finally:
            del inflight[waiter]
        self._release(conn)
        return result

    def _sweep(self) -> None:
        """Fail the requests past their deadline, in flight or waiting for a connection;
        runs every SWEEP_SECONDS while there are any (one timer for all of them)."""
        self._sweeper = None
        if not self._inflight and not self._waiters:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        for waiter, deadline in list(self._inflight.items()):  # at most ``limit`` entries
            if deadline <= now and not waiter.done():
                waiter.set_exception(TimeoutError())
        waiters = self._waiters
        while waiters and waiters[0][0].done():  # woken elsewhere, timed out, cancelled
            waiters.popleft()
        if self._waiters_in_order:
            # Deadlines in queue order (every request with the same timeout, as the ARI
            # client's): the expired ones are at the head, so stop at the first that is not.
            for queued, deadline in waiters:
                if deadline > now:
                    break
                if not queued.done():
                    queued.set_exception(TimeoutError())
        else:
            for queued, deadline in waiters:
                if deadline <= now and not queued.done():
                    queued.set_exception(TimeoutError())
            self._waiters_in_order = not waiters  # in order again once the queue empties
        self._sweeper = loop.call_later(SWEEP_SECONDS, self._sweep)

    async def _acquire(self, deadline: float) -> _Connection:
        loop = asyncio.get_running_loop()
        while True:  # bounded by the deadline: each pass either returns or waits
            if self._closed:
                raise HttpProtocolError("client closed")
            now = time.monotonic()
            while self._idle:
                conn = self._idle.pop()  # the most recently used first
                if conn.closed or now - conn.last_used > IDLE_SECONDS:
                    conn.close()
                    self._open -= 1
                    continue
                return conn
            if self._open < self.limit:
                self._open += 1
                try:
                    left = deadline - loop.time()
                    if left <= 0:
                        raise TimeoutError
                    async with asyncio.timeout(left):
                        _, conn = await loop.create_connection(
                            _Connection, self.host, self.port, ssl=self._ssl)
                except BaseException:
                    self._open -= 1
                    self._wake_one()
                    raise
                return conn
            left = deadline - loop.time()
            if left <= 0:  # before queueing: a waiter left behind would swallow a wake-up
                raise TimeoutError
            waiter: asyncio.Future[None] = loop.create_future()
            waiters = self._waiters
            if waiters and deadline < waiters[-1][1]:
                self._waiters_in_order = False
            waiters.append((waiter, deadline))  # the sweep fails it at its deadline
            if self._sweeper is None:
                self._sweeper = loop.call_later(SWEEP_SECONDS, self._sweep)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._wake_one()  # woken, but leaving (cancelled): pass it on
                raise
            finally:
                # A waiter that was woken has left the queue (_wake_one pops it); one that
                # timed out or was cancelled stays in it, done, and _wake_one skips it. No
                # search of the queue here: it holds every request waiting for a connection,
                # thousands under overload, and a search per request made that quadratic.
                if not waiter.done():
                    waiter.cancel()

    def _release(self, conn: _Connection) -> None:
        if conn.closed or not conn.keep_alive or self._closed:
            conn.close()
            self._open -= 1
        else:
            self._idle.append(conn)
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter, _ = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        self._closed = True
        while self._idle:
            self._idle.pop().close()
            self._open -= 1
        for waiter, _ in self._waiters:
            if not waiter.done():
                waiter.set_result(None)  # wake them: they raise "client closed"
        self._waiters.clear()
