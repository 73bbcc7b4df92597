"""Two daemons on one Asterisk and one PostgreSQL, each with its own Stasis app (``keypress``
and ``keypress-b``, the latter reached through the ``keypress-inbound-b`` dialplan context):
a buyer's max_concurrency counts the legs of both."""

from __future__ import annotations

from typing import Any

import pytest

from keypress_ari.calls.buyer_limits import GLOBAL, LOCAL
from tests.support.daemon import RunningDaemon
from tests.support.process import until
from tests.support.tcpproxy import TcpProxy
from tests.test_pg_outage import via

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]

CATALOG = """
routers:
  - {name: limited, request_key_press: false, buyers: [one-at-a-time, answer]}
  - {name: only-limited, request_key_press: false, buyers: [one-at-a-time]}
buyers:
  - {name: answer, endpoint: "Local/answer@keypress-buyers/n"}
  - {name: one-at-a-time, endpoint: "Local/answer@keypress-buyers/n", max_concurrency: 1}
numbers:
  - {number: "204", router: limited}
  - {number: "206", router: only-limited}
"""
B = "keypress-inbound-b"  # the dialplan context whose calls go to daemon B's app


async def two_daemons(daemon_factory: Any) -> tuple[RunningDaemon, RunningDaemon]:
    a = await daemon_factory()
    b = await daemon_factory(app="keypress-b")
    await a.load(CATALOG)
    await b.daemon.reload_catalog()
    return a, b


async def released(kp: RunningDaemon) -> None:
    """The daemon holds no buyer leg and its releases reached PostgreSQL."""
    limits = kp.daemon.limits
    assert limits is not None

    async def none_held() -> bool:
        return not limits.live
    await until(none_held, 10.0, "the daemon's buyer legs released")
    await limits.settle(5.0)


async def test_a_buyer_busy_on_one_daemon_is_skipped_by_the_other_until_released(
        daemon_factory: Any, test_caller: Any) -> None:
    a, b = await two_daemons(daemon_factory)
    first, first_id = await a.enter(test_caller, "204")
    await a.watch.event(first_id, "bridged", buyer="one-at-a-time")
    dialing = await a.watch.event(first_id, "dialing", buyer="one-at-a-time")
    assert dialing.detail["counted"] == GLOBAL

    _second, second_id = await b.enter(test_caller, "204", context=B)
    await b.watch.event(second_id, "bridged", buyer="answer")  # the next buyer
    skipped = await b.watch.event(second_id, "buyer_skipped")
    assert skipped.detail == {"buyer": "one-at-a-time", "reason": "at max_concurrency 1",
                              "live": 1, "counted": GLOBAL}
    _, stored = await b.stored(second_id)  # and so says its call log in PostgreSQL
    assert [(e.kind, e.detail.get("buyer"), e.detail.get("reason")) for e in stored
            if e.kind in ("buyer_skipped", "dialing")] == [
        ("buyer_skipped", "one-at-a-time", "at max_concurrency 1"),
        ("dialing", "answer", None)]

    await first.hangup()
    await a.watch.event(first_id, "call_ended")
    await released(a)
    _third, third_id = await b.enter(test_caller, "204", context=B)
    await b.watch.event(third_id, "bridged", buyer="one-at-a-time")  # free again


async def test_no_buyer_left_when_the_only_buyer_is_busy_on_the_other_daemon(
        daemon_factory: Any, test_caller: Any) -> None:
    a, b = await two_daemons(daemon_factory)
    _first, first_id = await b.enter(test_caller, "206", context=B)
    await b.watch.event(first_id, "bridged", buyer="one-at-a-time")
    _second, second_id = await a.enter(test_caller, "206", wait_answer=False)
    await a.watch.event(second_id, "no_buyer_available")
    skipped = await a.watch.event(second_id, "buyer_skipped")
    assert skipped.detail["reason"] == "at max_concurrency 1"
    assert "dialing" not in a.watch.kinds(second_id)


async def test_postgresql_away_the_local_count_decides_and_the_leg_is_counted_once_back(
        pg_proxy: TcpProxy, daemon_factory: Any, test_caller: Any, pg_dsn: str,
        db: Any) -> None:
    kp = await daemon_factory(dsn=via(pg_proxy, pg_dsn), buyer_lease=3.0,
                              buyer_reserve_timeout=0.5)
    await kp.load(CATALOG)
    pg_proxy.refuse()
    pg_proxy.reset()  # PostgreSQL unreachable from the daemon from here on
    _first, first_id = await kp.enter(test_caller, "204")
    dialing = await kp.watch.event(first_id, "dialing", buyer="one-at-a-time")
    assert dialing.detail["counted"] == LOCAL  # routed all the same
    await kp.watch.event(first_id, "bridged", buyer="one-at-a-time")
    _second, second_id = await kp.enter(test_caller, "204")
    skipped = await kp.watch.event(second_id, "buyer_skipped")  # its own legs still count
    assert skipped.detail == {"buyer": "one-at-a-time", "reason": "at max_concurrency 1"}
    await kp.watch.event(second_id, "bridged", buyer="answer")
    assert kp.daemon.limits is not None and kp.daemon.limits.fallbacks == 1
    pg_proxy.refuse(False)

    async def counted() -> bool:  # the next lease renewal writes the leg held meanwhile
        async with db.acquire() as conn:
            return bool(await conn.fetchval(
                "SELECT count(*) FROM buyer_legs WHERE buyer = 'one-at-a-time'") == 1)
    await until(counted, 15.0, "the leg held while PostgreSQL was away reached buyer_legs")
