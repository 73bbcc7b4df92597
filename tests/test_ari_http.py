"""The ARI HTTP/1.1 keep-alive pool (keypress_ari.ari.rest_pool) against small local servers.

The servers here are fault-injection stand-ins started with ``asyncio.start_server`` on
127.0.0.1: they frame responses in every way the client must read, hold responses, never
answer, close mid-response or answer garbage. They are not a fake ARI (that is
bench/fake_ari.py, the project's one): they write raw bytes no HTTP framework would
(responses split anywhere, bad chunk sizes), which is what these tests are about. The happy
path against the real Asterisk is covered by tests/test_ari_client.py. Nothing here sleeps
to synchronise: the tests wait on conditions the servers signal, each wait bounded by
``WAIT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

import pytest

from keypress_ari.ari import rest_pool as http_mod
from keypress_ari.ari.client import AriClient
from keypress_ari.ari.errors import AriUnavailable
from keypress_ari.ari.rest_pool import HttpPool, HttpProtocolError, _Connection, _dechunk

AUTH = "Basic dXNlcjpwYXNz"
WAIT = 5.0  # the bound on every wait for a condition in these tests
SLACK = 2.0  # how late a timeout may fire on a loaded machine


# ---- a scriptable local HTTP server ------------------------------------------------------


@dataclass
class Request:
    method: str
    target: str
    version: str
    head: bytes  # the raw request head, up to and including the blank line
    headers: dict[str, str]  # names in lower case
    body: bytes


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on the connection, or None once the client has closed it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = head[:-4].decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    try:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return Request(method, target, version, head, headers, body)


def ok(body: bytes = b"", *extra: str, status: str = "200 OK") -> bytes:
    """A response framed by Content-Length."""
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class ServerConn:
    """The server's side of one accepted connection."""

    def __init__(self, server: FakeServer, index: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.index = index
        self.reader = reader
        self.writer = writer
        self.eof = False  # the client closed the connection

    async def next_request(self) -> Request | None:
        request = await read_request(self.reader)
        if request is None:
            self.eof = True
        else:
            self.server.requests.append(request)
        self.server.notify()
        return request

    async def send(self, *pieces: bytes) -> None:
        """Write each piece separately (drained, Nagle off), so they tend to arrive in
        separate reads; the byte-at-a-time protocol test covers every split for sure."""
        for piece in pieces:
            self.writer.write(piece)
            await self.writer.drain()


Handler = Callable[[ServerConn], Awaitable[None]]


class FakeServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.conns: list[ServerConn] = []
        self.requests: list[Request] = []
        self.open_now = 0
        self.max_open = 0
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def accepted(self) -> int:
        return len(self.conns)

    def url(self, path: str = "/ari") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_until(self, predicate: Callable[[], bool], what: str) -> None:
        try:
            async with asyncio.timeout(WAIT):
                while not predicate():  # bounded by the timeout; wakes on each change
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"server: timed out waiting for {what}") from None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = ServerConn(self, len(self.conns), reader, writer)
        self.conns.append(conn)
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        self.notify()
        try:
            await self.handler(conn)
        except (ConnectionError, asyncio.CancelledError):
            pass  # cancelled by stop(): end quietly (asyncio logs a cancelled handler task)
        finally:
            self.open_now -= 1
            writer.close()
            self._tasks.discard(task)
            self.notify()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in self.conns:
            conn.writer.close()
        if self._server is not None:
            await self._server.wait_closed()


async def keep_alive(conn: ServerConn) -> None:
    """Answer every request on the connection with 200 and ``<connection>:<target>``."""
    while (request := await conn.next_request()) is not None:
        await conn.send(ok(f"{conn.index}:{request.target}".encode()))


async def never_answer(conn: ServerConn) -> None:
    """Read requests and answer none of them, until the client closes."""
    while await conn.next_request() is not None:
        pass


StartServer = Callable[[Handler], Awaitable[FakeServer]]
MakePool = Callable[..., HttpPool]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    servers: list[FakeServer] = []

    async def start(handler: Handler) -> FakeServer:
        server = FakeServer(handler)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


@pytest.fixture
async def make_pool() -> AsyncIterator[MakePool]:
    pools: list[HttpPool] = []

    def make(server: FakeServer, *, limit: int = 50, path: str = "/ari") -> HttpPool:
        pool = HttpPool(server.url(path), {"Authorization": AUTH}, limit=limit)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close()


async def settle(predicate: Callable[[], bool], what: str) -> None:
    """Let the loop run until ``predicate`` holds: for client state no event signals (a
    task queued for a connection, a close seen). Usually a pass or two; bounded by WAIT."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    passes = 0
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        passes += 1
        await asyncio.sleep(0 if passes < 100 else 0.005)  # a yield, then a gentle poll


# ---- 1. keep-alive reuse -----------------------------------------------------------------


async def test_sequential_requests_reuse_one_keep_alive_connection(
        start_server: StartServer, make_pool: MakePool) -> None:
    server = await start_server(keep_alive)
    pool = make_pool(server)
    results = [await pool.request("GET", f"/r{i}", None, WAIT) for i in range(4)]
    assert results == [(200, f"0:/ari/r{i}".encode()) for i in range(4)]
    assert server.accepted == 1
    assert [r.target for r in server.requests] == [f"/ari/r{i}" for i in range(4)]


# ---- 2. the request line and headers -----------------------------------------------------


async def test_request_line_and_headers(start_server: StartServer, make_pool: MakePool) -> None:
    server = await start_server(keep_alive)
    pool = make_pool(server, path="/ari/")  # a trailing slash in the base URL is dropped
    host = f"127.0.0.1:{server.port}"
    body = b'{"variables": {"A": "1"}}'

    assert await pool.request("GET", "/asterisk/ping", None, WAIT) == (
        200, b"0:/ari/asterisk/ping")
    assert await pool.request("POST", "/channels/c%2F1/play?media=sound%3Abeep", body,
                              WAIT) == (200, b"0:/ari/channels/c%2F1/play?media=sound%3Abeep")
    await pool.request("POST", "/channels/c1/answer", None, WAIT)
    await pool.request("PUT", "/bridges/b1", None, WAIT)
    await pool.request("DELETE", "/channels/c1?reason=normal", None, WAIT)

    get, post_json, post_empty, put_empty, delete = server.requests
    # A body-less GET: the exact bytes, no Content-Length.
    assert get.head == (f"GET /ari/asterisk/ping HTTP/1.1\r\nHost: {host}\r\n"
                        f"Authorization: {AUTH}\r\n\r\n").encode()
    # A JSON body.
    assert (post_json.method, post_json.target, post_json.version) == (
        "POST", "/ari/channels/c%2F1/play?media=sound%3Abeep", "HTTP/1.1")
    assert post_json.headers == {
        "host": host,
        "authorization": AUTH,
        "content-type": "application/json",
        "content-length": str(len(body)),
    }
    assert post_json.body == body
    # A body-less POST and PUT say Content-Length: 0 (and no Content-Type).
    for request, method, target in ((post_empty, "POST", "/ari/channels/c1/answer"),
                                     (put_empty, "PUT", "/ari/bridges/b1")):
        assert (request.method, request.target) == (method, target)
        assert request.headers == {"host": host, "authorization": AUTH,
                                   "content-length": "0"}
        assert request.body == b""
    # A body-less DELETE: no Content-Length.
    assert delete.head == (f"DELETE /ari/channels/c1?reason=normal HTTP/1.1\r\nHost: {host}"
                           f"\r\nAuthorization: {AUTH}\r\n\r\n").encode()
    assert server.accepted == 1


# ---- 3. response framing -----------------------------------------------------------------

CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"

FRAMINGS: dict[str, tuple[list[bytes], tuple[int, bytes]]] = {
    "content-length": (
        [b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
         b'{"a": "b"}\n'],
        (200, b'{"a": "b"}\n')),
    "content-length-split": (
        [b"HTTP/1.1 201 Created\r\nContent-Le", b"ngth: 11\r\n", b"\r\nhello", b" world"],
        (201, b"hello world")),
    "content-length-zero": ([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], (200, b"")),
    "chunked": (
        [CHUNKED_HEAD + b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"], (200, b"hello world")),
    "chunked-split-with-extensions": (
        [CHUNKED_HEAD, b"5;name=val", b"ue\r\nhel", b"lo\r", b"\n", b"6\r\n wo", b"rld\r\n",
         b"A; x=1\r\n{\"k\":\r\n1}\n\r\n", b"0\r", b"\n", b"\r", b"\n"],
        (200, b'hello world{"k":\r\n1}\n')),
    "chunked-with-trailers": (
        [CHUNKED_HEAD + b"3\r\nabc\r\n0\r\n", b"X-Trailer: 1\r\n", b"X-Other: 2\r\n\r\n"],
        (200, b"abc")),
    "chunked-empty": ([CHUNKED_HEAD + b"0\r\n\r\n"], (200, b"")),
    "204-no-body": ([b"HTTP/1.1 204 No Content\r\nServer: Asterisk\r\n\r\n"], (204, b"")),
}


@pytest.mark.parametrize("name", list(FRAMINGS))
async def test_response_framing_keeps_the_connection(
        name: str, start_server: StartServer, make_pool: MakePool) -> None:
    pieces, expected = FRAMINGS[name]

    async def handler(conn: ServerConn) -> None:
        while await conn.next_request() is not None:
            await conn.send(*pieces)

    server = await start_server(handler)
    pool = make_pool(server)
    # Three in a row on one connection: each response ends exactly where its framing says.
    for _ in range(3):
        assert await pool.request("GET", "/x", None, WAIT) == expected
    assert server.accepted == 1


async def test_body_delimited_by_connection_close(
        start_server: StartServer, make_pool: MakePool) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.next_request() is not None:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello",
                            b" world")
        # returning closes the connection: the end of the body

    server = await start_server(handler)
    pool = make_pool(server)
    assert await pool.request("GET", "/a", None, WAIT) == (200, b"hello world")
    assert await pool.request("GET", "/b", None, WAIT) == (200, b"hello world")
    assert server.accepted == 2


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


@pytest.mark.parametrize("name", list(FRAMINGS))
async def test_protocol_reads_a_response_split_anywhere(name: str) -> None:
    """Fed to the protocol in two pieces at every split point, then a byte at a time: the
    response completes on its last byte, never before, and the connection stays usable."""
    pieces, expected = FRAMINGS[name]
    raw = b"".join(pieces)
    feeds = [[raw[:cut], raw[cut:]] for cut in range(1, len(raw))]
    feeds.append([raw[i:i + 1] for i in range(len(raw))])
    for feed in feeds:
        transport = FakeTransport()
        conn = _Connection()
        conn.connection_made(transport)
        waiter = conn.send(b"GET / HTTP/1.1\r\n\r\n")
        for piece in feed[:-1]:
            conn.data_received(piece)
            assert not waiter.done(), (name, feed)
        conn.data_received(feed[-1])
        assert waiter.done(), (name, feed)
        assert waiter.result() == expected
        assert conn.keep_alive and not conn.closed and not transport.closed


@contextlib.contextmanager
def cpu_bound(seconds: float) -> Iterator[None]:
    """Fail (rather than hang the run) if the block spins longer than ``seconds``."""
    def expired(signum: int, frame: FrameType | None) -> None:
        raise AssertionError(f"still running after {seconds} s: an endless loop")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("body", [
    b"-6\r\nhello!\r\n0\r\n\r\n",  # a negative size once sent _dechunk back to the start
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"+5\r\nhello\r\n0\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n",
    b"zz\r\nhello\r\n0\r\n\r\n",
    b"\r\nhello\r\n0\r\n\r\n",
    b";ext\r\nhello\r\n0\r\n\r\n",
])
def test_dechunk_rejects_a_bad_chunk_size(body: bytes) -> None:
    with cpu_bound(2.0), pytest.raises(HttpProtocolError, match="bad chunk size"):
        _dechunk(bytearray(body))


def test_dechunk_accepts_hex_sizes_in_either_case() -> None:
    data = bytes(range(256)) * 2  # 0x200 bytes
    assert _dechunk(bytearray(b"1Ff\r\n" + data[:0x1FF] + b"\r\n1 ; x\r\n" + data[0x1FF:]
                              + b"\r\n0\r\n\r\n")) == data


# ---- 4. Connection: close from the server ------------------------------------------------


@pytest.mark.parametrize("response", [
    ok(b"bye", "Connection: close"),
    ok(b"bye", "connection:  Close "),
    b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nbye",
])
async def test_connection_close_means_a_new_connection(
        response: bytes, start_server: StartServer, make_pool: MakePool) -> None:
    async def handler(conn: ServerConn) -> None:
        # The server answers and keeps its end open: the client must close it.
        while await conn.next_request() is not None:
            await conn.send(response)

    server = await start_server(handler)
    pool = make_pool(server)
    assert await pool.request("GET", "/a", None, WAIT) == (200, b"bye")
    await server.wait_until(lambda: server.conns[0].eof, "the client to close connection 0")
    assert await pool.request("GET", "/b", None, WAIT) == (200, b"bye")
    assert server.accepted == 2
    assert [len([r for r in server.requests if r.target == t]) for t in ("/ari/a", "/ari/b")] \
        == [1, 1]


# ---- 5. a server that never answers ------------------------------------------------------


async def test_timeout_then_a_fresh_connection(
        start_server: StartServer, make_pool: MakePool) -> None:
    async def handler(conn: ServerConn) -> None:
        if conn.index == 0:
            await never_answer(conn)
        else:
            await keep_alive(conn)

    server = await start_server(handler)
    pool = make_pool(server)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutError):
        await pool.request("GET", "/slow", None, 0.2)
    elapsed = loop.time() - started
    assert 0.19 <= elapsed < 0.2 + SLACK
    # The timed-out connection is closed, never reused: a response may still come on it.
    await server.wait_until(lambda: server.conns[0].eof, "the client to close connection 0")
    assert await pool.request("GET", "/next", None, WAIT) == (200, b"1:/ari/next")
    assert server.accepted == 2


# ---- 6. the server closes mid-response ---------------------------------------------------


@pytest.mark.parametrize("partial", [
    b"",
    b"HTTP/1.1 200 OK\r\nContent-Len",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
    CHUNKED_HEAD + b"5\r\nhello\r\n6\r\n wor",
    CHUNKED_HEAD + b"5\r\nhello\r\n0\r\n",
])
async def test_server_closes_mid_response(
        partial: bytes, start_server: StartServer, make_pool: MakePool) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.next_request() is not None:
            await conn.send(partial)
        # returning closes the connection

    server = await start_server(handler)
    pool = make_pool(server)
    with pytest.raises(HttpProtocolError, match="connection closed by the server"):
        await pool.request("GET", "/x", None, WAIT)


# ---- 7. garbage instead of a status line -------------------------------------------------


@pytest.mark.parametrize("garbage", [
    b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
    b"HTTP/2 200\r\n\r\n",
    b"HTTP/1.1 OK 200\r\nContent-Length: 0\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
])
async def test_garbage_status_line(
        garbage: bytes, start_server: StartServer, make_pool: MakePool) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.next_request() is not None:
            await conn.send(garbage)
            await conn.next_request()  # keep the connection open until the client closes

    server = await start_server(handler)
    pool = make_pool(server)
    with pytest.raises(HttpProtocolError, match=r"not an HTTP/1\.x status line"):
        await pool.request("GET", "/x", None, WAIT)
    await server.wait_until(lambda: server.conns[0].eof, "the client to close connection 0")


async def test_bad_content_length(start_server: StartServer, make_pool: MakePool) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.next_request() is not None:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n")
            await conn.next_request()

    server = await start_server(handler)
    pool = make_pool(server)
    with pytest.raises(HttpProtocolError, match="bad Content-Length"):
        await pool.request("GET", "/x", None, WAIT)


# ---- 8. the connection limit -------------------------------------------------------------


def holding(release: asyncio.Event) -> Handler:
    """Keep-alive, each response held until ``release`` is set."""
    async def handler(conn: ServerConn) -> None:
        while (request := await conn.next_request()) is not None:
            await release.wait()
            await conn.send(ok(f"{conn.index}:{request.target}".encode()))
    return handler


async def test_limit_caps_open_connections(
        start_server: StartServer, make_pool: MakePool) -> None:
    release = asyncio.Event()
    server = await start_server(holding(release))
    pool = make_pool(server, limit=2)
    tasks = [asyncio.create_task(pool.request("GET", f"/r{i}", None, WAIT)) for i in range(5)]
    try:
        await server.wait_until(lambda: len(server.requests) == 2, "two held requests")
        assert server.accepted == 2
        await settle(lambda: len(pool._waiters) == 3, "three requests waiting for a connection")
        assert not any(t.done() for t in tasks)
        release.set()
        async with asyncio.timeout(WAIT):
            results = await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    assert sorted(body.split(b":")[1] for _, body in results) == [
        f"/ari/r{i}".encode() for i in range(5)]
    assert {status for status, _ in results} == {200}
    assert server.accepted == 2
    assert server.max_open == 2


async def test_waiter_times_out_waiting_for_a_connection(
        start_server: StartServer, make_pool: MakePool) -> None:
    release = asyncio.Event()
    server = await start_server(holding(release))
    pool = make_pool(server, limit=1)
    first = asyncio.create_task(pool.request("GET", "/first", None, WAIT))
    try:
        await server.wait_until(lambda: len(server.requests) == 1, "the first request")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await pool.request("GET", "/second", None, 0.2)
        assert 0.19 <= loop.time() - started < 0.2 + SLACK
        assert not first.done()
        release.set()
        assert await asyncio.wait_for(first, WAIT) == (200, b"0:/ari/first")
    finally:
        first.cancel()
    assert await pool.request("GET", "/third", None, WAIT) == (200, b"0:/ari/third")
    assert server.accepted == 1
    assert [r.target for r in server.requests] == ["/ari/first", "/ari/third"]


async def test_shorter_deadline_behind_a_longer_one_still_times_out(
        start_server: StartServer, make_pool: MakePool) -> None:
    """Waiting requests' deadlines are swept from the queue's head while they come in order;
    one with a shorter timeout queued behind a longer one is not missed by that."""
    release = asyncio.Event()
    server = await start_server(holding(release))
    pool = make_pool(server, limit=1)
    first = asyncio.create_task(pool.request("GET", "/first", None, WAIT))
    patient: asyncio.Task[tuple[int, bytes]] | None = None
    try:
        await server.wait_until(lambda: len(server.requests) == 1, "the first request")
        patient = asyncio.create_task(pool.request("GET", "/patient", None, WAIT))
        await settle(lambda: len(pool._waiters) == 1, "one request waiting")
        with pytest.raises(TimeoutError):
            await pool.request("GET", "/hasty", None, 0.2)
        assert not patient.done()
        release.set()
        assert await asyncio.wait_for(first, WAIT) == (200, b"0:/ari/first")
        assert await asyncio.wait_for(patient, WAIT) == (200, b"0:/ari/patient")
    finally:
        first.cancel()
        if patient is not None:
            patient.cancel()
    assert [r.target for r in server.requests] == ["/ari/first", "/ari/patient"]


async def test_expired_waiter_does_not_swallow_a_wakeup(
        start_server: StartServer, make_pool: MakePool) -> None:
    """A request whose deadline has already passed when it would wait for a connection
    raises TimeoutError and leaves no waiter behind to take the next one's wake-up."""
    release = asyncio.Event()
    server = await start_server(holding(release))
    pool = make_pool(server, limit=1)
    first = asyncio.create_task(pool.request("GET", "/first", None, WAIT))
    waiting: asyncio.Task[tuple[int, bytes]] | None = None
    try:
        await server.wait_until(lambda: len(server.requests) == 1, "the first request")
        with pytest.raises(TimeoutError):
            await pool.request("GET", "/expired", None, 0.0)
        waiting = asyncio.create_task(pool.request("GET", "/waiting", None, WAIT))
        await settle(lambda: len(pool._waiters) == 1, "one request waiting")
        release.set()
        assert await asyncio.wait_for(first, WAIT) == (200, b"0:/ari/first")
        assert await asyncio.wait_for(waiting, 2.0) == (200, b"0:/ari/waiting")
    finally:
        first.cancel()
        if waiting is not None:
            waiting.cancel()
    assert server.accepted == 1


async def test_cancelled_waiter_passes_its_wakeup_on(
        start_server: StartServer, make_pool: MakePool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A waiter woken for a free connection and cancelled before it runs (its own timeout,
    or its caller, in the same loop pass) hands the wake-up to the next waiter."""
    loop = asyncio.get_running_loop()
    hook: list[Callable[[], object]] = []

    class HookedConnection(_Connection):
        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            while hook:  # runs in the same loop pass as the woken request task
                loop.call_soon(hook.pop())

    monkeypatch.setattr(http_mod, "_Connection", HookedConnection)
    release = asyncio.Event()
    server = await start_server(holding(release))
    pool = make_pool(server, limit=1)
    first = asyncio.create_task(pool.request("GET", "/first", None, WAIT))
    cancelled = asyncio.create_task(pool.request("GET", "/cancelled", None, WAIT))
    waiting = asyncio.create_task(pool.request("GET", "/waiting", None, WAIT))
    try:
        await server.wait_until(lambda: len(server.requests) == 1, "the first request")
        await settle(lambda: len(pool._waiters) == 2, "two requests waiting")
        hook.append(cancelled.cancel)
        release.set()
        assert await asyncio.wait_for(first, WAIT) == (200, b"0:/ari/first")
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(cancelled, WAIT)
        assert await asyncio.wait_for(waiting, 2.0) == (200, b"0:/ari/waiting")
    finally:
        for task in (first, cancelled, waiting):
            task.cancel()
    assert server.accepted == 1


# ---- 9. idle connections -----------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


async def test_connection_idle_too_long_is_not_reused(
        start_server: StartServer, make_pool: MakePool,
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(http_mod, "time", clock)  # the pool's clock only, not the loop's
    server = await start_server(keep_alive)
    pool = make_pool(server)
    assert await pool.request("GET", "/a", None, WAIT) == (200, b"0:/ari/a")
    clock.now += http_mod.IDLE_SECONDS - 0.5
    assert await pool.request("GET", "/b", None, WAIT) == (200, b"0:/ari/b")
    assert server.accepted == 1
    clock.now += http_mod.IDLE_SECONDS + 0.5
    assert await pool.request("GET", "/c", None, WAIT) == (200, b"1:/ari/c")
    assert server.accepted == 2
    await server.wait_until(lambda: server.conns[0].eof, "the client to close connection 0")
    assert pool._open == 1


async def test_connection_closed_by_the_server_while_idle_is_not_reused(
        start_server: StartServer, make_pool: MakePool) -> None:
    async def handler(conn: ServerConn) -> None:
        if (request := await conn.next_request()) is not None:
            await conn.send(ok(f"{conn.index}:{request.target}".encode()))
        # then close, like Asterisk after session_keep_alive

    server = await start_server(handler)
    pool = make_pool(server)
    assert await pool.request("GET", "/a", None, WAIT) == (200, b"0:/ari/a")
    await server.wait_until(lambda: server.open_now == 0, "the server to close")
    await settle(lambda: all(c.closed for c in pool._idle), "the client to see the close")
    assert await pool.request("GET", "/b", None, WAIT) == (200, b"1:/ari/b")


# ---- 10. close() -------------------------------------------------------------------------


async def test_close_closes_idle_connections_and_refuses_requests(
        start_server: StartServer, make_pool: MakePool) -> None:
    server = await start_server(keep_alive)
    pool = make_pool(server)
    await asyncio.gather(*(pool.request("GET", f"/{i}", None, WAIT) for i in range(3)))
    assert server.accepted == 3
    assert len(pool._idle) == 3
    await pool.close()
    await server.wait_until(lambda: all(c.eof for c in server.conns),
                            "the client to close every connection")
    assert pool._open == 0
    with pytest.raises(HttpProtocolError, match="client closed"):
        await pool.request("GET", "/late", None, WAIT)
    assert server.accepted == 3


async def test_close_fails_waiters_and_lets_requests_in_flight_finish(
        start_server: StartServer, make_pool: MakePool) -> None:
    release = asyncio.Event()
    server = await start_server(holding(release))
    pool = make_pool(server, limit=1)
    first = asyncio.create_task(pool.request("GET", "/first", None, WAIT))
    waiting = asyncio.create_task(pool.request("GET", "/waiting", None, WAIT))
    try:
        await server.wait_until(lambda: len(server.requests) == 1, "the first request")
        await settle(lambda: len(pool._waiters) == 1, "one request waiting")
        await pool.close()
        with pytest.raises(HttpProtocolError, match="client closed"):
            await asyncio.wait_for(waiting, WAIT)
        release.set()
        assert await asyncio.wait_for(first, WAIT) == (200, b"0:/ari/first")
    finally:
        first.cancel()
        waiting.cancel()
    await server.wait_until(lambda: server.conns[0].eof, "the client to close connection 0")
    assert pool._open == 0


# ---- 11. AriClient maps the failures to AriUnavailable -----------------------------------


def ari_client(url: str) -> AriClient:
    return AriClient(url, "user", "pass", app="kp-test", timeout=0.2)


async def test_ari_client_timeout_is_unavailable(start_server: StartServer) -> None:
    server = await start_server(never_answer)
    async with ari_client(server.url()) as client:
        with pytest.raises(AriUnavailable) as info:
            await client.ping()
    exc = info.value
    assert (exc.status, exc.method, exc.path, exc.message) == (
        None, "GET", "/asterisk/ping", "request timed out")
    assert server.requests[0].headers["authorization"] == "Basic dXNlcjpwYXNz"


async def test_ari_client_refused_connection_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with ari_client(f"http://127.0.0.1:{port}/ari") as client:
        with pytest.raises(AriUnavailable) as info:
            await client.answer("c1")
    exc = info.value
    assert (exc.status, exc.method, exc.path) == (None, "POST", "/channels/c1/answer")
    assert exc.message.startswith("ConnectionRefusedError: ")


@pytest.mark.parametrize(("reply", "message"), [
    (b"garbage\r\n\r\n", "HttpProtocolError: not an HTTP/1.x status line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhel",
     "HttpProtocolError: connection closed by the server"),
])
async def test_ari_client_protocol_error_is_unavailable(
        reply: bytes, message: str, start_server: StartServer) -> None:
    async def handler(conn: ServerConn) -> None:
        if await conn.next_request() is not None:
            await conn.send(reply)

    server = await start_server(handler)
    async with ari_client(server.url()) as client:
        with pytest.raises(AriUnavailable) as info:
            await client.hangup("c1")
    exc = info.value
    assert (exc.status, exc.method, exc.path) == (None, "DELETE", "/channels/c1")
    assert exc.message.startswith(message)
