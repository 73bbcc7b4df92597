"""Daemon leases and call ownership on the real PostgreSQL (``store.leases``): a take-over
moves a dead daemon's open calls to exactly one peer on the same Asterisk, never a live
daemon's nor another Asterisk's; the old owner's renewal then fails (fencing) and its late
call updates are refused; a restart starts a new epoch."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import asyncpg
import pytest

from keypress_ari.store import leases
from keypress_ari.store.log_rows import _UPDATE_CALL

pytestmark = pytest.mark.pg
ARI_1, ARI_2 = "http://127.0.0.1:18088/ari", "http://127.0.0.1:18089/ari"


async def open_call(conn: asyncpg.Connection, call_id: str, owner: str) -> None:
    state = json.dumps({"call_id": call_id, "owner": owner, "stage": "bridged"})
    await conn.execute(
        "INSERT INTO calls (id, number, channel_id, stage, state, started_at) "
        "VALUES ($1::uuid, '1', $2, 'bridged', $3::jsonb, $4)",
        call_id, f"ch-{call_id[:4]}", state, datetime.now(UTC))


async def owner_of(conn: asyncpg.Connection, call_id: str) -> str:
    return str(await conn.fetchval("SELECT state->>'owner' FROM calls WHERE id = $1::uuid",
                                   call_id))


async def test_one_peer_on_the_same_asterisk_takes_a_dead_daemons_calls(
        db: asyncpg.Pool) -> None:
    ids = [f"0000000{n}-0000-4000-8000-000000000000" for n in range(4)]
    async with db.acquire() as conn:
        epoch = await leases.register(conn, "dead", "keypress-a", ARI_1, -1, "h", 1)  # ran out
        await leases.register(conn, "alive", "keypress-c", ARI_1, 60, "h", 3)
        for name, url in (("peer-1", ARI_1), ("peer-2", ARI_1), ("far", ARI_2)):
            await leases.register(conn, name, name, url, 60, "h", 2)
        for call_id, owner in zip(ids, ("dead", "dead", "alive", "far"), strict=True):
            await open_call(conn, call_id, owner)
    async with db.acquire() as c1, db.acquire() as c2, db.acquire() as c3:
        results = await asyncio.gather(leases.take_over(c1, "peer-1", ARI_1),
                                       leases.take_over(c2, "peer-2", ARI_1),
                                       leases.take_over(c3, "far", ARI_2))
    taken = [t for r in results for t in r]
    assert len(taken) == 1 and taken[0].daemon == "dead"
    assert sorted(taken[0].call_ids) == ids[:2]
    winner = "peer-1" if results[0] else "peer-2"
    async with db.acquire() as conn:
        assert [await owner_of(conn, i) for i in ids] == [winner, winner, "alive", "far"]
        assert await conn.fetchval("SELECT taken_over_by FROM daemons WHERE name = 'dead'") \
            == winner
        assert not await leases.renew(conn, "dead", epoch, 3.0)  # fenced
        assert await leases.take_over(conn, winner, ARI_1) == []  # not taken twice

        # the old owner's late update of its call is refused; the new owner's goes through
        for owner, disposition in (("dead", "late"), (winner, "sale")):
            await conn.execute(_UPDATE_CALL, ids[0], "ended", "{}", "{}", disposition,
                               json.dumps({"owner": owner}), None, None, None)
        assert await conn.fetchval("SELECT disposition FROM calls WHERE id = $1::uuid",
                                   ids[0]) == "sale"

        again = await leases.register(conn, "dead", "keypress-a", ARI_1, 60, "h", 4)
        assert again == epoch + 2  # its start, then the take-over, then this restart
        assert await leases.renew(conn, "dead", again, 60)
        assert await leases.peers(conn, "dead", ARI_1) == 3
