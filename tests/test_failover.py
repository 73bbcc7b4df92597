"""Two daemons as processes on one Asterisk and one PostgreSQL, calls offered by
StasisBroadcast: SIGKILL the daemon that carries a bridged call and its peer takes the call
over once the dead daemon's lease runs out (the legs move into the peer's app, still in
their bridge); the buyer's next press works there; the call's log stays one gap-free,
duplicate-free sequence; the killed daemon, restarted, does not touch the call it lost."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from keypress_ari.flows.yamlio import load_catalog_yaml
from keypress_ari.store.catalog import import_catalog
from tests.support.buyers import TestBuyers, agent_route
from tests.support.process import daemon_env, spawn_daemon, until

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]

NUMBER = "18005550703"
CATALOG = """
flow_groups:
  - name: agent
    flows:
      - {key: "1", disposition: sale}
""" + agent_route(NUMBER)


def node_env(asterisk: Any, pg_dsn: str, tmp_path: Path, node: str) -> dict[str, str]:
    env = daemon_env(asterisk, pg_dsn, tmp_path / f"state-{node}")
    env.update({"KEYPRESS_ARI__APP": f"keypress-{node}",
                "KEYPRESS_CLUSTER__ENABLED": "true",
                "KEYPRESS_CLUSTER__NAME": f"node-{node}",
                "KEYPRESS_CLUSTER__LEASE_TTL": "1.0",
                "KEYPRESS_CLUSTER__RENEW_INTERVAL": "0.2"})
    return env


async def pair_with_a_bridged_call(asterisk: Any, pg_dsn: str, db: asyncpg.Pool,
                                   test_caller: Any, tmp_path: Path) -> Any:
    """Two daemons (a, b) and a call one of them bridged: (envs, logs, procs, call, phone,
    call id, the owner's node letter, the other's)."""
    async with db.acquire() as conn:
        await import_catalog(conn, load_catalog_yaml(CATALOG, "t"))
    envs = {n: node_env(asterisk, pg_dsn, tmp_path, n) for n in ("a", "b")}
    logs = {n: tmp_path / f"daemon-{n}.log" for n in envs}
    procs = {n: await spawn_daemon(envs[n], logs[n], test_caller.client) for n in envs}
    call = await test_caller.place_call(NUMBER, context="keypress-broadcast", wait_answer=False)
    phone = await TestBuyers.of(test_caller).next_leg("acme")
    await phone.answer()

    async def bridged() -> Any:
        return await db.fetchrow(
            "SELECT id::text AS id, state->>'owner' AS owner FROM calls "
            "WHERE channel_id = $1 AND stage = 'bridged' AND state->>'stage' = 'bridged'",
            call.remote_id)

    row = await until(bridged, 10, "the call is bridged and its state persisted")
    owner = row["owner"].removeprefix("node-")
    return envs, logs, procs, call, phone, row["id"], owner, "b" if owner == "a" else "a"


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_a_peer_carries_on_the_calls_of_a_killed_daemon(
        asterisk: Any, pg_dsn: str, db: asyncpg.Pool, test_caller: Any,
        tmp_path: Path) -> None:
    envs, logs, procs, call, phone, call_id, dead, peer = await pair_with_a_bridged_call(
        asterisk, pg_dsn, db, test_caller, tmp_path)
    try:
        procs[dead].send_signal(signal.SIGKILL)
        await procs[dead].wait()

        async def carried() -> Any:
            return await db.fetchval(
                "SELECT count(*) FROM call_events WHERE call_id = $1::uuid AND kind = "
                "'adopted'", call_id)

        await until(carried, 10, "the peer adopted the dead daemon's call")
        assert await db.fetchval("SELECT state->>'owner' FROM calls WHERE id = $1::uuid",
                                 call_id) == f"node-{peer}"
        assert await db.fetchval("SELECT taken_over_by FROM daemons WHERE name = $1",
                                 f"node-{dead}") == f"node-{peer}"
        await phone.press("1")  # the buyer's next press, now handled by the peer
        await call.wait_hangup(10)
        await phone.wait_hangup(10)

        async def closed() -> Any:
            return await db.fetchrow("SELECT disposition, ended_by FROM calls "
                                     "WHERE id = $1::uuid AND ended_at IS NOT NULL", call_id)

        ended = await until(closed, 10, "the call is closed")
        assert (ended["disposition"], ended["ended_by"]) == ("sale", "daemon")
        epoch = await db.fetchval("SELECT epoch FROM daemons WHERE name = $1",
                                  f"node-{dead}")
        procs[dead] = await spawn_daemon(envs[dead], logs[dead], test_caller.client)

        async def rejoined() -> Any:
            return await db.fetchval("SELECT epoch > $2 AND taken_over_by IS NULL FROM daemons"
                                     " WHERE name = $1", f"node-{dead}", epoch)

        await until(rejoined, 10, "the killed daemon registered again")
    finally:
        for proc in procs.values():
            await stop(proc)
    rows = await db.fetch("SELECT seq, kind, leg, detail FROM call_events WHERE call_id = "
                          "$1::uuid AND seq IS NOT NULL ORDER BY seq", call_id)
    seqs = [r["seq"] for r in rows]
    assert seqs == list(range(1, len(seqs) + 1)), seqs  # no gap, no duplicate
    kinds = [r["kind"] for r in rows]
    assert kinds.count("adopted") == 1  # the restarted daemon did not take it back
    assert kinds.index("bridged") < kinds.index("adopted") < kinds.index("key_press")
    assert kinds[-1] == "call_ended"
    assert await db.fetchval("SELECT state->>'owner' FROM calls WHERE id = $1::uuid",
                             call_id) == f"node-{peer}"
    assert procs[peer].returncode == 0


async def test_a_paused_owner_that_lost_its_call_stands_down(
        asterisk: Any, pg_dsn: str, db: asyncpg.Pool, test_caller: Any,
        tmp_path: Path) -> None:
    """SIGSTOP (a wedged process, a frozen VM) past the lease: the peer takes the call; on
    SIGCONT the old owner holds the events that piled up (the legs' StasisEnd among them)
    until its renewal fails, then drops them and stands down: it never acts on the call."""
    _, logs, procs, call, phone, call_id, paused, peer = await pair_with_a_bridged_call(
        asterisk, pg_dsn, db, test_caller, tmp_path)
    try:
        procs[paused].send_signal(signal.SIGSTOP)

        async def carried() -> Any:
            return await db.fetchval("SELECT state->>'owner' = $2 FROM calls WHERE id = "
                                     "$1::uuid", call_id, f"node-{peer}")

        await until(carried, 10, "the peer took over the paused daemon's call")
        await until(lambda: db.fetchval(
            "SELECT count(*) FROM call_events WHERE call_id = $1::uuid AND kind = 'adopted'",
            call_id), 10, "the peer adopted it")
        procs[paused].send_signal(signal.SIGCONT)

        async def stood_down() -> bool:
            text = await asyncio.to_thread(logs[paused].read_text)
            return "standing down" in text

        await until(stood_down, 10, "the paused daemon learns it lost its calls")
        try:
            await phone.press("1")
        except Exception:
            for r in await db.fetch("SELECT seq, kind, leg, at, detail::text AS d FROM call_events"
                                    " WHERE call_id = $1::uuid ORDER BY seq", call_id):
                print("EV", r["at"], r["seq"], r["kind"], r["leg"], r["d"][:300])
            for n in logs:
                print("LOG", n, logs[n].read_text()[-3000:])
            raise
        await call.wait_hangup(10)
        await until(lambda: db.fetchval("SELECT disposition FROM calls WHERE id = $1::uuid "
                                        "AND ended_at IS NOT NULL", call_id),
                    10, "the peer ends the call")
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGCONT)
            await stop(proc)
    rows = await db.fetch("SELECT seq, kind FROM call_events WHERE call_id = $1::uuid "
                          "AND seq IS NOT NULL ORDER BY seq", call_id)
    seqs, kinds = [r["seq"] for r in rows], [r["kind"] for r in rows]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert kinds.count("key_press") == 1 and kinds.count("call_ended") == 1, kinds
    assert kinds[-1] == "call_ended"
    row = await db.fetchrow("SELECT disposition, ended_by FROM calls WHERE id = $1::uuid",
                            call_id)
    assert (row["disposition"], row["ended_by"]) == ("sale", "daemon")
