"""PostgreSQL LISTEN on a direct connection that survives the connection dropping.

The connection is its own (not the pool's), so a pool recycling connections never takes the
LISTEN with it. When it is lost (PostgreSQL restarted, ``pg_terminate_backend``, a network
cut that a keep-alive query finds), it is reopened with a doubling backoff capped at
``backoff_cap`` seconds, every channel is listened to again, and ``on_reconnect`` runs so the
owner catches up on what it may have missed meanwhile (a NOTIFY is not queued for a
listener that is away).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg
import structlog

log = structlog.get_logger("keypress.listener")

Handler = Callable[..., None]  # asyncpg's (connection, pid, channel, payload)


class NotifyListener:
    def __init__(self, dsn: str, handlers: Mapping[str, Handler], *,
                 on_reconnect: Callable[[], Awaitable[None]] | None = None,
                 backoff_cap: float = 5.0, keepalive: float = 10.0,
                 connect_timeout: float = 5.0) -> None:
        self._dsn = dsn
        self._handlers = dict(handlers)
        self._on_reconnect = on_reconnect
        self.backoff_cap, self.keepalive, self.connect_timeout = (backoff_cap, keepalive,
                                                                 connect_timeout)
        self._conn: Any = None
        self._lost = asyncio.Event()
        self.reconnects = 0  # completed re-LISTENs after a lost connection
        self.failed_attempts = 0  # reconnection attempts that failed
        self._changed = asyncio.Condition()

    @property
    def pid(self) -> int | None:
        """The listening connection's server process id (None while disconnected)."""
        conn = self._conn
        return conn.get_server_pid() if conn is not None and not conn.is_closed() else None

    async def start(self) -> None:
        """Connect and LISTEN (raises when PostgreSQL cannot be reached: a start error)."""
        await self._connect()

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self._dsn, timeout=self.connect_timeout)
        try:
            for channel, handler in self._handlers.items():
                await conn.add_listener(channel, handler)
        except BaseException:
            await conn.close(timeout=1)
            raise
        self._lost.clear()
        self._conn = conn
        conn.add_termination_listener(self._terminated)

    def _terminated(self, conn: Any) -> None:
        if conn is self._conn:  # not an old connection closing late
            self._lost.set()

    async def run(self) -> None:
        """Watch the connection and reopen it whenever it is lost (until cancelled)."""
        while True:
            await self._until_lost()
            await self._drop()
            log.warning("LISTEN connection lost; reconnecting", channels=list(self._handlers))
            await self._reconnect()
            async with self._changed:
                self.reconnects += 1
                self._changed.notify_all()
            log.info("LISTEN re-issued", channels=list(self._handlers), pid=self.pid,
                     reconnects=self.reconnects)
            if self._on_reconnect is not None:
                try:
                    await self._on_reconnect()
                except Exception as exc:
                    log.error("catching up after the LISTEN reconnect failed", error=str(exc))

    async def _until_lost(self) -> None:
        """Return when the connection is closed, or a keep-alive query fails."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.keepalive):
                    await self._lost.wait()
                return
            try:
                async with asyncio.timeout(self.keepalive):
                    await self._conn.fetchval("SELECT 1")
            except Exception as exc:
                log.warning("LISTEN connection does not answer", error=str(exc))
                return

    async def _reconnect(self) -> None:
        delay = 0.1
        while True:  # each attempt bounded by connect_timeout; the wait capped
            try:
                await self._connect()
                return
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                self.failed_attempts += 1
                log.warning("LISTEN reconnect failed", error=str(exc), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_cap)

    async def wait_reconnects(self, at_least: int, timeout: float) -> None:
        """Wait until the LISTEN was re-issued ``at_least`` times."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.reconnects >= at_least)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=1)

    async def close(self) -> None:
        conn = self._conn
        if conn is not None and not conn.is_closed():
            for channel, handler in self._handlers.items():
                with contextlib.suppress(Exception):
                    await conn.remove_listener(channel, handler)
        await self._drop()
