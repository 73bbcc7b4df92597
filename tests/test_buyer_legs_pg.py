"""Buyer leg reservations in a real PostgreSQL (``buyer_legs``, ``reserve_buyer_leg``): many
tasks on two connections pools (two daemons) never exceed a limit; expiry, release and
renewal free or keep legs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from keypress_ari.store.buyer_legs import PgBuyerLegs
from tests.support.process import until

pytestmark = pytest.mark.pg


@pytest.fixture
async def two_pools(db: asyncpg.Pool, pg_dsn: str) -> AsyncIterator[tuple[asyncpg.Pool, ...]]:
    pools = [await asyncpg.create_pool(pg_dsn, min_size=4, max_size=4) for _ in range(2)]
    yield tuple(pools)
    for pool in pools:
        await pool.close()


async def test_concurrent_reservations_on_two_connection_pools_never_exceed_the_limit(
        two_pools: tuple[asyncpg.Pool, ...]) -> None:
    a, b = (PgBuyerLegs(pool, f"daemon-{i}", 30.0) for i, pool in enumerate(two_pools))
    for limit in (1, 3):  # each round: 40 tasks race for the buyer, half on each daemon
        buyer = f"buyer-{limit}"
        legs = [f"{buyer}-leg-{i}" for i in range(40)]
        counts = await asyncio.gather(*((a if i % 2 else b).reserve(buyer, leg, limit)
                                        for i, leg in enumerate(legs)))
        granted = [leg for leg, live in zip(legs, counts, strict=True) if live < limit]
        assert len(granted) == limit
        assert sorted(counts) == list(range(limit)) + [limit] * (40 - limit)
        assert await a.live(buyer) == limit
        async with two_pools[0].acquire() as conn:
            rows = await conn.fetch("SELECT leg_id FROM buyer_legs WHERE buyer = $1", buyer)
        assert sorted(r["leg_id"] for r in rows) == sorted(granted)


async def test_release_frees_a_place(two_pools: tuple[asyncpg.Pool, ...]) -> None:
    a, b = (PgBuyerLegs(pool, f"daemon-{i}", 30.0) for i, pool in enumerate(two_pools))
    assert await a.reserve("solo", "leg-a", 1) == 0
    assert await b.reserve("solo", "leg-b", 1) == 1  # refused
    await a.release("leg-a")
    assert await b.reserve("solo", "leg-b", 1) == 0
    assert await a.live("solo") == 1


async def test_reserving_the_same_leg_again_only_renews_it(
        two_pools: tuple[asyncpg.Pool, ...]) -> None:
    a = PgBuyerLegs(two_pools[0], "daemon-a", 30.0)
    assert await a.reserve("solo", "leg-a", 1) == 0
    assert await a.reserve("solo", "leg-a", 1) == 0  # a retry after a lost answer
    assert await a.live("solo") == 1


async def test_an_expired_lease_frees_the_place(two_pools: tuple[asyncpg.Pool, ...]) -> None:
    dying = PgBuyerLegs(two_pools[0], "daemon-dying", 0.3)  # never renewed
    alive = PgBuyerLegs(two_pools[1], "daemon-alive", 30.0)
    assert await dying.reserve("solo", "leg-dead", 1) == 0
    assert await alive.reserve("solo", "leg-new", 1) == 1

    async def granted() -> bool:
        return await alive.reserve("solo", "leg-new", 1) == 0
    await until(granted, 10.0, "the dead daemon's lease ran out")
    async with two_pools[1].acquire() as conn:  # the expired row was deleted by the reservation
        assert await conn.fetchval("SELECT count(*) FROM buyer_legs WHERE leg_id = 'leg-dead'") == 0


async def test_renewal_keeps_held_legs_reinserts_missing_ones_and_drops_the_rest(
        two_pools: tuple[asyncpg.Pool, ...]) -> None:
    a = PgBuyerLegs(two_pools[0], "daemon-a", 30.0)
    b = PgBuyerLegs(two_pools[1], "daemon-b", 30.0)
    await a.reserve("x", "leg-1", 5)
    await a.reserve("x", "leg-gone", 5)  # its release was lost
    await b.reserve("x", "leg-b", 5)
    async with two_pools[0].acquire() as conn:
        await conn.execute("UPDATE buyer_legs SET expires_at = now() + interval '1 second'")
        await a.renew({"leg-1": "x", "leg-outage": "x"}, keep=["leg-pending"])
        rows = {r["leg_id"]: r for r in await conn.fetch(
            "SELECT leg_id, daemon_id, expires_at - now() AS left FROM buyer_legs")}
    assert set(rows) == {"leg-1", "leg-outage", "leg-b"}  # leg-gone dropped, b's untouched
    assert rows["leg-1"]["left"].total_seconds() > 20
    assert rows["leg-outage"]["daemon_id"] == "daemon-a"
    assert rows["leg-b"]["left"].total_seconds() < 2
