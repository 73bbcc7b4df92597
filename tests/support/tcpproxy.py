"""A loopback TCP proxy the tests control, for fault injection between the daemon and ARI or
PostgreSQL: cut (close every connection), reset (abort with RST), refuse new connections
for a while, delay traffic. Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest


@dataclass(eq=False)
class _Pair:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.refusing = False
        self.delay = 0.0
        self.connections = 0  # accepted and forwarded so far
        self._pairs: set[_Pair] = set()
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Event()

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = _Pair(writer, up_writer)
        self._pairs.add(pair)
        self.connections += 1
        self._changed.set()
        pair.tasks = [asyncio.create_task(self._pump(reader, up_writer, pair)),
                      asyncio.create_task(self._pump(up_reader, writer, pair))]
        await asyncio.gather(*pair.tasks, return_exceptions=True)
        self._drop(pair, abort=False)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    pair: _Pair) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self.delay:
                    await asyncio.sleep(self.delay)  # injected latency, not synchronisation
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for task in pair.tasks:
                if task is not asyncio.current_task():
                    task.cancel()

    def _drop(self, pair: _Pair, *, abort: bool) -> None:
        if pair not in self._pairs:
            return
        self._pairs.discard(pair)
        for w in (pair.client, pair.upstream):
            with contextlib.suppress(Exception):
                if abort:
                    w.transport.abort()
                else:
                    w.close()
        for task in pair.tasks:
            task.cancel()
        self._changed.set()

    def cut(self) -> None:
        """Close every connection (FIN to both sides)."""
        for pair in list(self._pairs):
            self._drop(pair, abort=False)

    def reset(self) -> None:
        """Abort every connection (RST to both sides)."""
        for pair in list(self._pairs):
            self._drop(pair, abort=True)

    def refuse(self, on: bool = True) -> None:
        """While on, new connections are aborted at once (existing ones are kept)."""
        self.refusing = on

    async def wait_connections(self, at_least: int, timeout: float = 10.0) -> None:
        """Wait until ``connections`` (accepted so far) reaches ``at_least``."""
        async with asyncio.timeout(timeout):
            while self.connections < at_least:
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def pg_proxy(pg_dsn: str) -> AsyncIterator[TcpProxy]:
    """A proxy to PostgreSQL that outlives the daemons (requested before daemon_factory)."""
    parts = urlsplit(pg_dsn)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    yield proxy
    await proxy.stop()
