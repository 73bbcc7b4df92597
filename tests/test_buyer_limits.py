"""Buyers' max_concurrency across daemons, on the in-memory buyer legs table: two daemons
share one table; leases expire; releases and renewals; PostgreSQL away (the local count)."""

from __future__ import annotations

import asyncio

from keypress_ari.calls.buyer_limits import GLOBAL, LOCAL, BuyerLimits
from keypress_ari.flows.model import Buyer
from keypress_ari.store.memory_store import MemoryBuyerLegs, MemoryLegTable

ONE = Buyer(name="one", endpoint="PJSIP/one", max_concurrency=1)
TWO = Buyer(name="two", endpoint="PJSIP/two", max_concurrency=2)
FREE = Buyer(name="free", endpoint="PJSIP/free")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pair(clock: Clock, lease: float = 30.0) -> tuple[MemoryLegTable, BuyerLimits, BuyerLimits]:
    table = MemoryLegTable(clock)
    a = BuyerLimits(MemoryBuyerLegs(table, "daemon-a", lease), clock=clock)
    b = BuyerLimits(MemoryBuyerLegs(table, "daemon-b", lease), clock=clock)
    return table, a, b


async def test_a_leg_on_one_daemon_counts_on_the_other() -> None:
    table, a, b = pair(Clock())
    assert (await a.reserve(ONE, "leg-a1")).granted
    refused = await b.reserve(ONE, "leg-b1")
    assert not refused.granted and refused.live == 1 and refused.counted == GLOBAL
    assert dict(b.live) == {} and dict(a.live) == {"one": 1}
    assert table.live("one") == 1


async def test_release_frees_the_buyer_for_the_other_daemon() -> None:
    _, a, b = pair(Clock())
    await a.reserve(TWO, "leg-a1")
    await b.reserve(TWO, "leg-b1")
    assert not (await b.reserve(TWO, "leg-b2")).granted
    assert a.release("leg-a1") == "two"
    assert dict(a.live) == {}
    await a.settle()
    grant = await b.reserve(TWO, "leg-b2")
    assert grant.granted and grant.live == 1


async def test_a_reservation_waits_for_its_own_daemons_release_under_way() -> None:
    _, a, _ = pair(Clock())
    await a.reserve(ONE, "leg-a1")
    a.release("leg-a1")  # the delete is still to run
    assert (await a.reserve(ONE, "leg-a2")).granted


async def test_a_dead_daemons_legs_stop_counting_when_their_lease_runs_out() -> None:
    clock = Clock()
    _, a, b = pair(clock, lease=30.0)
    await a.reserve(ONE, "leg-a1")  # then daemon a dies: nothing renews its lease
    await b.renew()
    clock.now += 29.0
    assert not (await b.reserve(ONE, "leg-b1")).granted
    clock.now += 2.0
    assert (await b.reserve(ONE, "leg-b1")).granted


async def test_renewal_keeps_a_live_daemons_legs_counting() -> None:
    clock = Clock()
    _, a, b = pair(clock, lease=30.0)
    await a.reserve(ONE, "leg-a1")
    for _ in range(4):  # two minutes of renewals every 20 s
        clock.now += 20.0
        assert await a.renew()
        assert not (await b.reserve(ONE, f"leg-b{_}")).granted
    assert a.renewals == 4


async def test_buyers_without_a_limit_never_reach_the_table() -> None:
    table, a, _ = pair(Clock())
    table.down = True  # would fail every call
    grant = await a.reserve(FREE, "leg-a1")
    assert grant.granted and grant.counted == "" and a.fallbacks == 0
    assert dict(a.live) == {"free": 1} and table.rows == {}
    a.release("leg-a1")
    assert dict(a.live) == {}


async def test_database_away_falls_back_to_the_local_count_then_heals() -> None:
    clock = Clock()
    table, a, b = pair(clock)
    table.down = True
    grant = await a.reserve(ONE, "leg-a1")
    assert grant.granted and grant.counted == LOCAL and a.fallbacks == 1
    refused = await a.reserve(ONE, "leg-a2")  # its own legs still count
    assert not refused.granted and refused.counted == LOCAL
    assert not await a.renew()
    table.down = False
    assert await a.renew()  # the leg held meanwhile reaches the table
    assert table.live("one") == 1
    assert not (await b.reserve(ONE, "leg-b1")).granted


async def test_a_release_lost_while_the_database_was_away_is_dropped_at_renewal() -> None:
    table, a, _ = pair(Clock())
    await a.reserve(ONE, "leg-a1")
    table.down = True
    a.release("leg-a1")
    await a.settle()
    assert table.live("one") == 1  # the delete failed
    table.down = False
    assert await a.renew()
    assert table.live("one") == 0


async def test_a_slow_database_is_timed_out_and_the_local_count_decides() -> None:
    class Stuck(MemoryBuyerLegs):
        async def reserve(self, buyer: str, leg: str, limit: int) -> int:
            await asyncio.Event().wait()  # never answers
            return 0

    limits = BuyerLimits(Stuck(MemoryLegTable(), "d", 30.0), timeout=0.05)
    grant = await limits.reserve(ONE, "leg-1")
    assert grant.granted and grant.counted == LOCAL
    assert not limits.reachable()  # the next reservations do not wait for it again


async def test_adopted_legs_are_counted_from_the_next_renewal() -> None:
    table, a, b = pair(Clock())
    a.hold("one", "leg-adopted")
    assert dict(a.live) == {"one": 1} and table.rows == {}
    await a.renew()
    assert not (await b.reserve(ONE, "leg-b1")).granted


async def test_concurrent_reservations_never_exceed_the_limit() -> None:
    _, a, b = pair(Clock())
    grants = await asyncio.gather(*(limits.reserve(TWO, f"leg-{i}")
                                    for i, limits in enumerate([a, b] * 10)))
    assert sum(g.granted for g in grants) == 2
