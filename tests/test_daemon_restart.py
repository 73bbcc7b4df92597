"""The daemon as a process, killed and restarted mid-call on the real Asterisk: a restarted
daemon adopts the calls still in its Stasis app (a buyer can still press keys on a call that
began before the restart), and SIGTERM drains: the call log and the webhook outbox are
written before the process exits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from keypress_ari.ari.events import StasisStart
from keypress_ari.flows.yamlio import load_catalog_yaml
from keypress_ari.store.catalog import import_catalog
from tests.support.buyers import TestBuyers, agent_route
from tests.support.process import daemon_env, free_port, spawn_daemon, until

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]

FLOWS = """
flow_groups:
  - name: agent
    flows:
      - key: "1"
        disposition: sale
        actions:
          - webhook: {{url: "http://127.0.0.1:{port}/hook", body: {{d: "{{{{disposition}}}}"}}}}
"""


def catalog() -> str:
    """The flows (a webhook to a port nobody listens on) and the usual route for 600."""
    return FLOWS.format(port=free_port()) + agent_route("600")


def fetched(db: asyncpg.Pool, sql: str, *args: Any) -> Callable[[], Awaitable[Any]]:
    """A condition for ``until``: the query's value."""
    return lambda: db.fetchval(sql, *args)


def closed(db: asyncpg.Pool, call_id: str) -> Callable[[], Awaitable[Any]]:
    """A condition for ``until``: the call's row is closed."""
    return fetched(db, "SELECT ended_at IS NOT NULL FROM calls WHERE id = $1::uuid", call_id)


@contextlib.asynccontextmanager
async def terminated_at_exit(env: dict[str, str], log: Path, test_caller: Any
                             ) -> AsyncIterator[asyncio.subprocess.Process]:
    """A daemon for the block; SIGTERM at its end, waited for (its returncode is then set)."""
    proc = await spawn_daemon(env, log, test_caller.client)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)


async def bridged_call(db: asyncpg.Pool, test_caller: Any) -> tuple[Any, Any, str]:
    buyers = TestBuyers(test_caller)
    call = await test_caller.place_call("600", wait_answer=False)
    phone = await buyers.next_leg("acme")
    await phone.answer()
    await test_caller.wait_event(StasisStart, call.local_id)
    call_id = await until(fetched(db, "SELECT id::text FROM calls WHERE channel_id = $1 "
                                      "AND stage = 'bridged'", call.remote_id),
                          10, "the call is bridged")
    return call, phone, call_id


async def a_call_a_stopped_daemon_left(
        asterisk: Any, pg_dsn: str, db: asyncpg.Pool, test_caller: Any, tmp_path: Path,
        how: signal.Signals) -> tuple[dict[str, str], Path, Any, Any, str]:
    """The catalog, a daemon, a bridged call, then the daemon ended by ``how`` (waited for):
    the environment and log for the next daemon, the caller, the buyer phone, the call id."""
    async with db.acquire() as conn:
        await import_catalog(conn, load_catalog_yaml(catalog(), "t"))
    env, log = daemon_env(asterisk, pg_dsn, tmp_path / "state"), tmp_path / "daemon.log"
    first = await spawn_daemon(env, log, test_caller.client)
    try:
        call, phone, call_id = await bridged_call(db, test_caller)
        first.send_signal(how)
        await asyncio.wait_for(first.wait(), 15)
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    if how == signal.SIGTERM:
        assert first.returncode == 0
    return env, log, call, phone, call_id


async def test_a_restarted_daemon_adopts_a_bridged_call(
        asterisk: Any, pg_dsn: str, db: asyncpg.Pool, test_caller: Any, tmp_path: Path) -> None:
    env, log, call, phone, call_id = await a_call_a_stopped_daemon_left(
        asterisk, pg_dsn, db, test_caller, tmp_path, signal.SIGKILL)
    async with terminated_at_exit(env, log, test_caller) as second:
        await until(fetched(db, "SELECT 1 FROM call_events WHERE call_id = $1::uuid "
                                "AND kind = 'adopted'", call_id),
                    10, "the restarted daemon adopted the call")
        await phone.press("1")
        await call.wait_hangup(10)
        await phone.wait_hangup(10)
        await until(closed(db, call_id), 10, "the call is closed")
    rows = await db.fetch("SELECT seq, kind, leg, flow, detail FROM call_events "
                          "WHERE call_id = $1::uuid AND seq IS NOT NULL ORDER BY seq", call_id)
    seqs = [r["seq"] for r in rows]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate across the restart
    kinds = [r["kind"] for r in rows]
    assert kinds.index("bridged") < kinds.index("adopted") < kinds.index("key_press")
    press = rows[kinds.index("key_press")]
    assert (press["leg"], press["flow"]) == ("buyer", "agent/key 1 #1")
    row = await db.fetchrow("SELECT disposition, ended_by FROM calls WHERE id = $1::uuid",
                            call_id)
    assert row["disposition"] == "sale" and row["ended_by"] == "daemon"
    assert second.returncode == 0


async def test_sigterm_flushes_the_log_and_keeps_the_webhook(
        asterisk: Any, pg_dsn: str, db: asyncpg.Pool, test_caller: Any, tmp_path: Path) -> None:
    async with db.acquire() as conn:  # the receiver is down: the webhook stays pending
        await import_catalog(conn, load_catalog_yaml(catalog(), "t"))
    env, log = daemon_env(asterisk, pg_dsn, tmp_path / "state"), tmp_path / "daemon.log"
    daemon = await spawn_daemon(env, log, test_caller.client)
    try:
        call, phone, call_id = await bridged_call(db, test_caller)
        await phone.press("1")
        await call.wait_hangup(10)
        daemon.send_signal(signal.SIGTERM)  # at once: rows may still be in the daemon's queue
        await asyncio.wait_for(daemon.wait(), 15)
    finally:
        if daemon.returncode is None:
            daemon.kill()
            await daemon.wait()
    assert daemon.returncode == 0
    kinds = [r["kind"] for r in await db.fetch(
        "SELECT kind FROM call_events WHERE call_id = $1::uuid AND seq IS NOT NULL ORDER BY seq",
        call_id)]
    assert kinds[-1] == "call_ended"
    assert {"key_press", "webhook_queued", "disposition", "hangup"} <= set(kinds)
    outbox = await db.fetchrow("SELECT status, body FROM webhook_outbox WHERE call_id = $1::uuid",
                               call_id)
    assert outbox["status"] == "pending" and json.loads(outbox["body"]) == {"d": "sale"}
    stopped = [json.loads(line) for line in log.read_text().splitlines()
               if line.startswith("{") and "daemon stopped" in line]
    assert stopped


async def test_resync_destroys_bridges_a_stopped_run_left(test_caller: Any,
                                                          daemon_factory: Any) -> None:
    """A run that stopped while a call was bridged leaves its (empty) bridge in Asterisk;
    the next run's resync destroys bridges of ours that no call holds, and no others."""
    client = test_caller.client
    await client.create_bridge(bridge_id="kp-left-by-a-stopped-run")
    await client.create_bridge(bridge_id="someone-elses-bridge")
    try:
        kp = await daemon_factory()
        await kp.daemon.wait_resyncs(1, 10)

        async def gone() -> bool:  # Asterisk finishes destroying a bridge after the DELETE
            ids = {b.id for b in await client.list_bridges()}
            assert "someone-elses-bridge" in ids
            return "kp-left-by-a-stopped-run" not in ids

        await until(gone, 5, "the bridge the stopped run left is destroyed")
    finally:
        for bridge in await client.list_bridges():
            await client.destroy_bridge(bridge.id)


async def test_a_caller_who_hangs_up_while_no_daemon_runs_is_closed_by_the_next(
        asterisk: Any, pg_dsn: str, db: asyncpg.Pool, test_caller: Any, tmp_path: Path) -> None:
    """Between two daemons (an upgrade's restart) the caller hangs up: nobody sees it. The
    next daemon adopts the call, finds the caller's channel gone, closes the call and hangs
    up the buyer, who would otherwise sit in the bridge alone."""
    env, log, call, phone, call_id = await a_call_a_stopped_daemon_left(
        asterisk, pg_dsn, db, test_caller, tmp_path, signal.SIGTERM)
    await call.hangup()
    await call.wait_hangup(10)
    assert await db.fetchval("SELECT ended_at FROM calls WHERE id = $1::uuid", call_id) is None
    async with terminated_at_exit(env, log, test_caller) as second:
        await phone.wait_hangup(10)  # the buyer is not left alone in the bridge
        await until(closed(db, call_id), 10, "the next daemon closed the call")
    rows = await db.fetch("SELECT seq, kind, detail FROM call_events WHERE call_id = $1::uuid "
                          "AND seq IS NOT NULL ORDER BY seq", call_id)
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    kinds = [r["kind"] for r in rows]
    assert kinds.index("adopted") < kinds.index("call_ended") == len(kinds) - 1, kinds
    row = await db.fetchrow("SELECT ended_by FROM calls WHERE id = $1::uuid", call_id)
    assert row["ended_by"] == "caller", dict(row)
    assert second.returncode == 0
