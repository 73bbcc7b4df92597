"""The floor app's wire: REST over raw keep-alive HTTP/1.1 connections and the events
websocket over a raw protocol (``bench/floor_app.py`` is the app; see its docstring)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import struct
from collections import deque
from collections.abc import Callable
from json import loads
from typing import Any

MAX_CONNECTIONS = 50
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    """A client frame (RFC 6455: masked), FIN set; control frames only (<= 125 bytes)."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload[:125]))
    return bytes((0x80 | opcode, 0x80 | len(body))) + mask + body


# --- REST ---------------------------------------------------------------------------------


class _RestConnection(asyncio.Protocol):
    """One keep-alive connection, at most one request in flight."""

    __slots__ = ("_buf", "_busy", "_chunked", "_close", "_future", "_length", "_pool",
                 "_status", "transport")

    def __init__(self, pool: RestPool) -> None:
        self._pool = pool
        self.transport: asyncio.Transport | None = None
        self._future: asyncio.Future[int] | None = None  # None: nobody awaits the answer
        self._busy = False  # a request is in flight
        self._buf = b""
        self._status = 0
        self._length = -1  # -1: the head is not read yet
        self._chunked = False
        self._close = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._pool.release(self)

    def start(self, data: bytes, future: asyncio.Future[int] | None) -> None:
        self._future = future
        self._busy = True
        self._length = -1
        assert self.transport is not None
        self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        if not self._busy:  # bytes nobody asked for: the connection is unusable
            assert self.transport is not None
            self.transport.close()
            return
        buf = self._buf + data if self._buf else data
        if self._length < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._buf = buf
                return
            head = buf[:end].lower()
            self._status = status = int(head[9:12])
            self._chunked = False
            self._close = b"\r\nconnection: close" in head
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                eol = head.find(b"\r\n", i + 2)
                self._length = int(head[i + 17:eol if eol >= 0 else end])
            elif b"\r\ntransfer-encoding: chunked" in head:
                self._chunked = True
                self._length = 0
            elif status in (204, 304) or status < 200:
                self._length = 0
            else:  # a body delimited by the end of the connection: not from ARI
                self._length = 1 << 62
                self._close = True
            buf = buf[end + 4:]
        if self._chunked:
            if not _chunked_complete(buf):
                self._buf = buf
                return
        elif len(buf) < self._length:
            self._buf = buf
            return
        self._buf = b""
        self._done(self._status)

    def _done(self, status: int) -> None:
        future, self._future = self._future, None
        self._busy = False
        pool = self._pool
        if status >= 300:
            pool.errors += 1
        if future is not None and not future.done():
            future.set_result(status)
        if self._close:
            self._close = False
            assert self.transport is not None
            self.transport.close()  # connection_lost takes it out of the pool
        else:
            pool.release(self)

    def connection_lost(self, exc: Exception | None) -> None:
        pool = self._pool
        if self._busy:  # the request in flight is lost
            self._busy = False
            pool.errors += 1
            future, self._future = self._future, None
            if future is not None and not future.done():
                future.set_result(0)
        pool.lost(self)


def _chunked_complete(buf: bytes) -> bool:
    """Whether ``buf`` holds a whole chunked body (the body itself is never needed)."""
    pos = 0
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return False
        size = int(buf[pos:eol].split(b";", 1)[0], 16)
        if size == 0:
            return buf.find(b"\r\n\r\n", eol) >= 0 or buf[eol:eol + 4] == b"\r\n\r\n"
        pos = eol + 2 + size + 2
        if len(buf) < pos:
            return False


class RestPool:
    """Keep-alive connections to ARI; requests beyond ``limit`` in flight queue up."""

    def __init__(self, host: str, port: int, limit: int = MAX_CONNECTIONS) -> None:
        self.host = host
        self.port = port
        self.limit = limit
        self.errors = 0
        self._idle: list[_RestConnection] = []
        self._pending: deque[tuple[bytes, asyncio.Future[int] | None]] = deque()
        self._open = 0
        self._connecting: set[asyncio.Task[None]] = set()

    def send(self, data: bytes, future: asyncio.Future[int] | None = None) -> None:
        """Write ``data`` (a whole request) on an idle connection, or queue it."""
        if self._idle:
            self._idle.pop().start(data, future)
            return
        self._pending.append((data, future))
        if self._open < self.limit:
            self._open += 1
            task = asyncio.get_running_loop().create_task(self._connect())
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def request(self, data: bytes) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.send(data, future)
        return await future

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: _RestConnection(self), self.host, self.port)
        except OSError:
            self._open -= 1
            if self._open == 0:  # nothing will ever take the queued requests: fail them
                while self._pending:
                    _, future = self._pending.popleft()
                    self.errors += 1
                    if future is not None and not future.done():
                        future.set_result(0)

    def release(self, conn: _RestConnection) -> None:
        """A connection is free: it takes the next queued request or waits idle."""
        if self._pending:
            data, future = self._pending.popleft()
            conn.start(data, future)
        else:
            self._idle.append(conn)

    def lost(self, conn: _RestConnection) -> None:
        self._open -= 1
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
        if self._pending and self._open < self.limit:
            self._open += 1
            task = asyncio.get_running_loop().create_task(self._connect())
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    def close(self) -> None:
        for conn in self._idle:
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()


# --- the events websocket ------------------------------------------------------------------


class EventSocket(asyncio.Protocol):
    """``/ari/events`` over a raw protocol: Upgrade, then server frames to ``on_event``."""

    def __init__(self, request: bytes, key: bytes, on_event: Callable[[dict[str, Any]], None],
                 ) -> None:
        self.request = request
        self.accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        self.on_event = on_event
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._rest = b""
        self._fragments: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.opened, self.closed):
            if not future.done():
                future.set_exception(ConnectionError(f"events websocket closed: {exc}"))

    def fail(self, reason: str) -> None:
        for future in (self.opened, self.closed):
            if not future.done():
                future.set_exception(ConnectionError(reason))
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self._rest + data if self._rest else data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._rest = buf
                return
            head = buf[:end]
            if not head.startswith(b"HTTP/1.1 101") or self.accept not in head:
                self.fail(f"websocket upgrade refused: {head[:200]!r}")
                return
            self.upgraded = True
            self.opened.set_result(None)
            buf = buf[end + 4:]
        pos = 0
        size = len(buf)
        on_event = self.on_event
        while size - pos >= 2:
            b0 = buf[pos]
            length = buf[pos + 1]
            if length & 0x80:
                self.fail("masked frame from the server")
                return
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = _U16.unpack_from(buf, start)[0]
                start += 2
            elif length == 127:
                if size - pos < 10:
                    break
                length = _U64.unpack_from(buf, start)[0]
                start += 8
            end = start + length
            if end > size:
                break
            pos = end
            if b0 == 0x81:  # FIN + text: every ARI event
                on_event(loads(buf[start:end].decode()))
            else:
                self._other_frame(b0, buf[start:end])
        self._rest = buf[pos:] if pos < size else b""

    def _other_frame(self, b0: int, payload: bytes) -> None:
        opcode = b0 & 0x0F
        if opcode in (0x1, 0x0):  # a fragment of a text message
            self._fragments.append(payload)
            if b0 & 0x80:
                text = b"".join(self._fragments)
                self._fragments.clear()
                self.on_event(loads(text.decode()))
        elif opcode == 0x9 and self.transport is not None:  # ping -> pong
            self.transport.write(_masked_frame(0xA, payload))
        elif opcode == 0x8 and self.transport is not None:  # close: answer, hang up
            self.transport.write(_masked_frame(0x8, payload[:2]))
            self.transport.close()
            if not self.closed.done():
                self.closed.set_result(None)
