"""PostgreSQL outages on the real Asterisk and PostgreSQL: calls go on from memory, the call
log goes to the local journal, and every row reaches PostgreSQL once, in order, when it is
back -- also after the daemon was killed meanwhile. And a full journal: loud, nothing lost.

The daemon's PostgreSQL connection goes through a :class:`TcpProxy`; the test's own checks
use the test pool, which connects directly.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from structlog.testing import capture_logs

from keypress_ari.calllog.ops import CallEvent, CallOpened
from keypress_ari.flows.yamlio import load_catalog_yaml
from keypress_ari.store.catalog import import_catalog
from keypress_ari.store.journal import Journal
from keypress_ari.store.log_writer import CallLogWriter
from keypress_ari.store.pg_store import PgStore
from tests.support.daemon import ADMIN_TOKEN, RunningDaemon
from tests.support.process import daemon_env, free_port, spawn_daemon, until
from tests.support.tcpproxy import TcpProxy

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]

# Number 203 goes straight to a buyer that answers; on the bridged call, the caller's keys
# 1-9 are the number's keypress_controls: each sets a token and beeps to the caller.
CATALOG = """
flow_groups:
  - name: controls
    flows:
""" + "".join(
    f"""      - {{key: "{d}", extra_tokens: {{last: "{d}"}},
         call_control_actions: [{{play: {{media: "sound:beep", to: consumer}}}}]}}
""" for d in "123456789") + """
routers:
  - {name: direct, request_key_press: false, buyers: [answer]}
buyers:
  - {name: answer, endpoint: "Local/answer@keypress-buyers/n"}
numbers:
  - {number: "203", router: direct, keypress_controls: true, flow_group: controls}
"""
PRESSED = "".join("123456789"[i % 9] for i in range(30))  # never twice in a row (dedup)
OUTAGE = 10.0  # seconds PostgreSQL stays unreachable in the long test (the fault itself)


def via(proxy: TcpProxy, dsn: str) -> str:
    """``dsn`` with its host and port replaced by the proxy's."""
    parts = urlsplit(dsn)
    user = parts.netloc.rpartition("@")[0]
    netloc = f"{user}@{proxy.host_port}" if user else proxy.host_port
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@pytest.fixture
async def proxy(pg_dsn: str) -> AsyncIterator[TcpProxy]:
    """A proxy to PostgreSQL. Request it before ``daemon_factory``: it must outlive the
    daemons (they are stopped with PostgreSQL reachable again)."""
    parts = urlsplit(pg_dsn)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    yield proxy
    await proxy.stop()


async def bridged(test_caller: Any) -> None:
    async def two_in_a_bridge() -> bool:
        return any(len(b.channels) == 2 for b in await test_caller.client.list_bridges())
    await until(two_in_a_bridge, 10, "the call is bridged to the buyer")


async def stored_events(db: asyncpg.Pool, call_id: str) -> list[asyncpg.Record]:
    return list(await db.fetch("SELECT seq, kind, digit FROM call_events WHERE call_id = $1"
                               "::uuid ORDER BY seq", call_id))


def assert_complete(rows: list[asyncpg.Record], pressed: str) -> None:
    """Every event once, seq 1..n with no gap, the key presses in the order made."""
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert "".join(r["digit"] for r in rows if r["kind"] == "key_press") == pressed


async def test_calls_go_on_and_the_log_catches_up_after_an_outage(
        proxy: TcpProxy, daemon_factory: Any, test_caller: Any, pg_dsn: str,
        db: asyncpg.Pool) -> None:
    kp: RunningDaemon = await daemon_factory(dsn=via(proxy, pg_dsn))
    await kp.load(CATALOG)
    writer = kp.daemon.calllog
    assert writer is not None
    call = await test_caller.place_call("203")
    call_id = await kp.watch.call_id_for(call.remote_id)
    await kp.watch.event(call_id, "bridged")
    assert await writer.flush(10)

    try:
        await outage(kp, proxy, call, call_id)
    finally:
        proxy.refuse(False)  # also when it failed: the daemon stops with PostgreSQL back
    assert await writer.flush(30), f"still {writer.backlog} ops not written"
    assert writer.journal_backlog == 0
    assert (await kp.daemon.readiness())["database"] is True
    rows = await stored_events(db, call_id)
    assert_complete(rows, PRESSED)
    assert len(rows) == len(kp.watch.events(call_id))


async def outage(kp: RunningDaemon, proxy: TcpProxy, call: Any, call_id: str) -> None:
    """PostgreSQL away for OUTAGE seconds; keys pressed meanwhile are handled and logged."""
    writer = kp.daemon.calllog
    assert writer is not None
    proxy.reset()
    proxy.refuse(True)  # PostgreSQL unreachable from here on
    down_at = time.monotonic()
    pressed = PRESSED
    for n, digit in enumerate(pressed, 1):
        await call.press(digit, duration_ms=60, between_ms=0)
        press = await kp.watch.wait_for(
            lambda o, n=n: isinstance(o, CallEvent) and o.call_id == call_id  # type: ignore[misc]
            and o.kind == "key_press"
            and sum(e.kind == "key_press" for e in kp.watch.events(call_id)) >= n)
        assert isinstance(press, CallEvent)
    presses = [e for e in kp.watch.events(call_id) if e.kind == "key_press"]
    assert "".join(str(p.digit) for p in presses) == pressed
    assert all(p.detail["matched"] for p in presses)  # served from memory
    await kp.watch.event(call_id, "tokens_set", source="flow", tokens={"last": pressed[-1]})

    async def all_in_the_journal() -> bool:
        return writer.backlog > 0 and writer.backlog == writer.journal_backlog
    await until(all_in_the_journal, 5, "the in-memory queue went to the journal")
    ready = await kp.daemon.readiness()
    assert ready["database"] is False and ready["ready"] is False
    assert ready["ari"] is True
    assert ready["journal_backlog"] >= 2 * len(pressed) and not ready["journal_full"]
    assert ready["call_log_backlog"] == ready["journal_backlog"]
    metrics = kp.daemon.metrics.render()
    assert f"keypress_call_log_backlog {writer.backlog}" in metrics
    assert "keypress_journal_full 0" in metrics

    await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))  # the outage


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "term"])
async def test_ops_journaled_by_a_stopped_daemon_are_written_by_the_next(
        proxy: TcpProxy, asterisk: Any, pg_dsn: str, db: asyncpg.Pool, test_caller: Any,
        tmp_path: Path, daemon_factory: Any, stop_signal: signal.Signals) -> None:
    async with db.acquire() as conn:
        await import_catalog(conn, load_catalog_yaml(CATALOG, "test.yaml"))
    state, log = tmp_path / "state", tmp_path / "daemon.log"
    admin_port = free_port()
    env = daemon_env(asterisk, via(proxy, pg_dsn), state)
    env.update({"KEYPRESS_ADMIN__TOKEN": ADMIN_TOKEN,
                "KEYPRESS_ADMIN__PORT": str(admin_port)})
    first = await spawn_daemon(env, log, test_caller.client)
    readyz = f"http://127.0.0.1:{admin_port}/readyz"
    try:
        async with aiohttp.ClientSession() as http:
            async def ready() -> bool:  # resynced with Asterisk, PostgreSQL reachable
                try:  # the admin API may start listening a moment after the Stasis app
                    async with http.get(readyz) as resp:
                        return resp.status == 200
                except aiohttp.ClientConnectionError:
                    return False
            await until(ready, 10, "the daemon is ready")
        call = await test_caller.place_call("203")
        await bridged(test_caller)
        proxy.reset()
        proxy.refuse(True)
        pressed = PRESSED[:12]
        for digit in pressed:
            since = test_caller.mark()
            await call.press(digit, duration_ms=60, between_ms=0)
            await test_caller.wait_for(  # the daemon handled it: its flow beeps
                lambda e: e.type == "PlaybackStarted"
                and e.playback.target_uri == f"channel:{call.remote_id}", since=since)

        async with aiohttp.ClientSession() as http:
            async def journaled() -> bool:
                async with http.get(readyz) as resp:
                    ready = await resp.json()
                assert resp.status == 503 and ready["database"] is False
                return bool(ready["journal_backlog"] >= 2 * len(pressed)
                            and ready["call_log_backlog"] == ready["journal_backlog"])
            await until(journaled, 10, "the daemon journaled every key press")
        first.send_signal(stop_signal)  # a crash, or a clean stop, while PostgreSQL is down
        await asyncio.wait_for(first.wait(), 30)
        assert first.returncode == (0 if stop_signal == signal.SIGTERM else -signal.SIGKILL)
    finally:
        proxy.refuse(False)
        if first.returncode is None:
            first.kill()
            await first.wait()
    await call.hangup()

    journal = Journal(state / "journal")
    journal.open()
    left = journal.pending()
    journal.close()
    call_ids = {op.call_id for op in left if isinstance(op, CallEvent)}
    assert len(call_ids) == 1
    call_id = call_ids.pop()
    assert [op.digit for op in left if isinstance(op, CallEvent)
            and op.kind == "key_press"] == list(pressed)
    assert not await db.fetchval("SELECT count(*) FROM call_events WHERE call_id = $1::uuid"
                                 " AND kind = 'key_press'", call_id)

    kp: RunningDaemon = await daemon_factory(state_dir=state)  # PostgreSQL reachable again
    assert kp.daemon.calllog is not None
    # The journal reaches PostgreSQL before the calls to adopt are read: the new run adopts
    # the call (its caller hung up meanwhile) and closes it after the journaled rows.
    await kp.watch.event(call_id, "call_ended")
    assert await kp.daemon.calllog.flush(15)
    rows = await stored_events(db, call_id)
    assert_complete(rows, pressed)
    last_journaled = max(op.seq or 0 for op in left if isinstance(op, CallEvent))
    later = [r["kind"] for r in rows if r["seq"] > last_journaled]
    assert later[0] == "adopted" and later[-1] == "call_ended"
    assert await db.fetchval("SELECT ended_at IS NOT NULL FROM calls WHERE id = $1::uuid",
                             call_id)


class SwitchPool:
    """The test pool, or a dropped connection while ``down``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.down = True

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        if self.down:
            raise ConnectionResetError("injected: PostgreSQL unreachable")
        async with self.pool.acquire() as conn:
            yield conn


async def test_a_full_journal_is_loud_and_loses_nothing(db: asyncpg.Pool,
                                                        tmp_path: Path) -> None:
    call_id = str(uuid.uuid4())
    pool = SwitchPool(db)
    journal = Journal(tmp_path / "journal", max_bytes=16 * 1024, segment_bytes=4096)
    writer = CallLogWriter(PgStore(pool), batch_size=20, max_backoff=0.05, journal=journal)
    now = datetime.now(UTC)
    with capture_logs() as logs:
        task = asyncio.create_task(writer.run())
        writer.emit(CallOpened(call_id, "203", "5551234", "direct", "chan-1", "bridged", now))
        seq = 0
        for _ in range(2):  # two bursts, both beyond what the journal holds
            for _ in range(150):
                seq += 1
                writer.emit(CallEvent(call_id, seq, now, "caller", "key_press", "1", "c/1",
                                      {"n": seq, "pad": "x" * 40}))

            async def full(total: int = seq + 1) -> bool:
                return writer.journal_full and writer.backlog == total
            await until(full, 5, "the journal is full and holds what it can")
        assert writer.journal_backlog < writer.backlog  # the rest waits in memory
        assert journal.size_bytes <= journal.max_bytes
        loud = [e for e in logs if e["log_level"] == "error" and "FULL" in e["event"]]
        assert len(loud) == 1  # once per episode, with the backlog
        assert loud[0]["journal_backlog"] > 0 and loud[0]["memory_backlog"] > 0

        pool.down = False  # PostgreSQL is back: the journal drains and the rest follows it
        assert await writer.flush(15)
        assert not writer.journal_full and writer.journal_full_episodes == 1
        writer.close()
        await asyncio.wait_for(task, 5)
    assert any(e["event"] == "call log journal has room again" for e in logs)
    rows = await db.fetch("SELECT seq FROM call_events WHERE call_id = $1::uuid ORDER BY id",
                          call_id)
    assert [r["seq"] for r in rows] == list(range(1, seq + 1))  # in order, once each
