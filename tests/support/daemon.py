"""The daemon under test, run in the test's event loop against the test Asterisk and database.

:class:`LogWatch` sees every call log op as the daemon queues it, so tests wait for the
event they need (with a timeout) instead of sleeping or polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from keypress_ari.calllog.ops import CallEvent, CallOpened, Op
from keypress_ari.config import (
    AdminSettings,
    AgiSettings,
    AmiSettings,
    AriSettings,
    BroadcastSettings,
    CallSettings,
    DatabaseSettings,
    JournalSettings,
    Settings,
)
from keypress_ari.daemon import Daemon
from keypress_ari.flows.yamlio import load_catalog_yaml
from keypress_ari.store import log_queries as calls_store
from keypress_ari.store.catalog import import_catalog
from keypress_ari.store.log_queries import CallRow, EventRow


class LogWatch:
    def __init__(self) -> None:
        self.ops: list[Op] = []
        self._changed = asyncio.Event()

    def __call__(self, op: Op) -> None:
        self.ops.append(op)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[Op], bool], timeout: float = 10.0) -> Op:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for op in self.ops:
                        if predicate(op):
                            return op
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            kinds = [getattr(o, "kind", type(o).__name__) for o in self.ops[-15:]]
            raise AssertionError(f"no such call log op within {timeout}s; last: {kinds}") from None

    async def call_id_for(self, channel_id: str, timeout: float = 10.0) -> str:
        op = await self.wait_for(
            lambda o: isinstance(o, CallOpened) and o.channel_id == channel_id, timeout)
        assert isinstance(op, CallOpened)
        return op.call_id

    async def event(self, call_id: str, kind: str, timeout: float = 10.0,
                    **fields: Any) -> CallEvent:
        def pred(o: Op) -> bool:
            return (isinstance(o, CallEvent) and o.call_id == call_id and o.kind == kind
                    and all(o.detail.get(k, getattr(o, k, None)) == v for k, v in fields.items()))
        op = await self.wait_for(pred, timeout)
        assert isinstance(op, CallEvent)
        return op

    def events(self, call_id: str) -> list[CallEvent]:
        return [o for o in self.ops if isinstance(o, CallEvent) and o.call_id == call_id]

    def kinds(self, call_id: str) -> list[str]:
        return [e.kind for e in self.events(call_id)]


class RunningDaemon:
    def __init__(self, daemon: Daemon, watch: LogWatch) -> None:
        self.daemon = daemon
        self.watch = watch

    async def load(self, yaml_text: str) -> None:
        """Import a catalog (as `flows import` does) and make the daemon use it."""
        async with self.daemon.pool.acquire() as conn:
            await import_catalog(conn, load_catalog_yaml(yaml_text, "test.yaml"))
        await self.daemon.reload_catalog()

    async def enter(self, test_caller: Any, number: str, **kw: Any) -> tuple[Any, str]:
        """Place a call to ``number``; returns (the placed call, the daemon's call id)."""
        try:
            call = await test_caller.place_call(number, **kw)
        except AssertionError as exc:  # say what the daemon did meanwhile
            recent = [(getattr(o, "kind", type(o).__name__), getattr(o, "detail", None))
                      for o in self.watch.ops[-12:]]
            raise AssertionError(f"{exc}; the daemon's last call log ops: {recent}") from None
        return call, await self.watch.call_id_for(call.remote_id)

    async def stored(self, call_id: str) -> tuple[CallRow, list[EventRow]]:
        """The call row and its log as PostgreSQL has them, once the writer caught up."""
        assert self.daemon.calllog is not None
        assert await self.daemon.calllog.flush(10)
        async with self.daemon.pool.acquire() as conn:
            row = await calls_store.get_call(conn, call_id)
            events = await calls_store.call_events(conn, call_id)
        assert row is not None
        return row, events


ADMIN_TOKEN = "test-admin-token"


def daemon_settings(asterisk: Any, dsn: str, *, admin: bool = False,
                    state_dir: Path | None = None, journal_max_bytes: int | None = None,
                    agi: bool = False, ami: bool = False, ami_port: int | None = None,
                    ami_handover: str = "keypress-handover", app: str = "keypress",
                    broadcast: BroadcastSettings | None = None, **calls: Any) -> Settings:
    journal = JournalSettings() if state_dir is None else JournalSettings(state_dir=state_dir)
    if journal_max_bytes is not None:
        journal = journal.model_copy(update={"max_bytes": journal_max_bytes})
    return Settings(
        ari=AriSettings(url=asterisk.base_url, user=asterisk.ari_user,
                        password=asterisk.ari_password, app=app),
        database=DatabaseSettings(dsn=dsn),
        calls=CallSettings(**calls),
        admin=AdminSettings(port=0, token=ADMIN_TOKEN if admin else ""),
        journal=journal,
        # the fastagi mode, on the port the test Asterisk's applicationmap sends to
        agi=AgiSettings(enabled=agi, port=asterisk.agi_port),
        ami=AmiSettings(enabled=ami, port=ami_port or asterisk.ami_port, user=asterisk.ami_user,
                        secret=asterisk.ami_password, handover_context=ami_handover),
        broadcast=broadcast or BroadcastSettings(),
    )


@pytest.fixture
async def daemon_factory(asterisk: Any, pg_dsn: str, db: Any, tmp_path: Path) -> AsyncIterator[
        Callable[..., Awaitable[RunningDaemon]]]:
    """``await daemon_factory(**call_settings)`` starts a daemon; all are stopped after the
    test, once the channels still up were hung up (so their calls are closed in the log).

    ``dsn`` replaces the test database's (e.g. through a ``TcpProxy``), ``ami_port`` the
    test Asterisk's AMI port (the same); every daemon gets
    a fresh journal state directory under the test's ``tmp_path`` unless ``state_dir`` is
    given (a test that restarts a daemon on the same journal); ``journal_max_bytes`` too;
    ``app`` names its Stasis app (a second daemon on the same Asterisk: ``keypress-b``, which
    the ``keypress-inbound-b`` dialplan context hands calls to)."""
    started: list[Daemon] = []

    async def start(*, admin: bool = False, dsn: str | None = None,
                    state_dir: Path | None = None, journal_max_bytes: int | None = None,
                    agi: bool = False, ami: bool = False, ami_port: int | None = None,
                    ami_handover: str = "keypress-handover", app: str = "keypress",
                    broadcast: BroadcastSettings | None = None, **calls: Any) -> RunningDaemon:
        if state_dir is None:
            state_dir = tmp_path / f"daemon-state-{len(started) + 1}"
        d = Daemon(daemon_settings(asterisk, dsn or pg_dsn, admin=admin, state_dir=state_dir,
                                   journal_max_bytes=journal_max_bytes, agi=agi, ami=ami,
                                   ami_port=ami_port, ami_handover=ami_handover, app=app,
                                   broadcast=broadcast, **calls))
        watch = LogWatch()
        await d.start()
        started.append(d)
        assert d.calllog is not None and d.stream is not None
        d.calllog.add_listener(watch)
        await d.stream.wait_connected(10)
        if d.ami is not None:
            await d.ami.wait_connected(10)
        return RunningDaemon(d, watch)

    try:
        yield start
    finally:
        await asterisk.cleanup_channels()
        for d in started:
            await d.stop()


@pytest.fixture
async def daemon(daemon_factory: Callable[..., Awaitable[RunningDaemon]]) -> RunningDaemon:
    return await daemon_factory()
