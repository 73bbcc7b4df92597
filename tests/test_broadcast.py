"""Several daemons on one Asterisk, each with its own Stasis app name, the calls offered by
``StasisBroadcast()`` (``keypress-broadcast`` in the shipped dialplan): each call is claimed
by exactly one daemon and carried there; a daemon at ``broadcast.max_calls``, draining or
stopped leaves calls to the other; nobody claiming sends the call to the dialplan's
fallback; a second websocket on one app name makes the first stand down."""

from __future__ import annotations

from typing import Any

import pytest

from keypress_ari.calllog.ops import CallOpened
from keypress_ari.calls.claims import MAX_PENDING, claim_delay
from keypress_ari.config import BroadcastSettings
from tests.support.daemon import RunningDaemon
from tests.support.process import until

NUMBER = "18005550701"
pytestmark = [pytest.mark.asterisk, pytest.mark.pg]
CATALOG = f"""
flow_groups:
  - name: prompt
    flows:
      - {{key: "1", disposition: sale}}
routers:
  - {{name: r, request_key_press: true, prompt: "sound:beep", press_1_timeout: 30,
     flow_group: prompt}}
numbers:
  - {{number: "{NUMBER}", router: r}}
"""


def test_claim_delay_is_load_aware_and_declines_when_full_or_draining() -> None:
    s = BroadcastSettings(max_calls=3, delay_per_call_ms=10, max_delay_ms=25)
    assert claim_delay(s, accepting=True, live_calls=0, pending=0) == 0.0
    assert claim_delay(s, accepting=True, live_calls=1, pending=1) == 0.02
    assert claim_delay(s, accepting=True, live_calls=2, pending=0) == 0.02
    assert claim_delay(s, accepting=True, live_calls=3, pending=0) is None  # full
    assert claim_delay(s, accepting=True, live_calls=2, pending=1) is None  # pending counts
    assert claim_delay(s, accepting=False, live_calls=0, pending=0) is None  # draining
    assert claim_delay(BroadcastSettings(claim=False), accepting=True, live_calls=0,
                       pending=0) is None
    wide = BroadcastSettings(delay_per_call_ms=10, max_delay_ms=25)
    assert claim_delay(wide, accepting=True, live_calls=50, pending=0) == 0.025  # capped
    assert claim_delay(wide, accepting=True, live_calls=0, pending=MAX_PENDING) is None


async def two_daemons(daemon_factory: Any, **broadcast: Any) -> list[RunningDaemon]:
    settings = BroadcastSettings(**broadcast)
    daemons = [await daemon_factory(app=f"keypress-{name}", broadcast=settings)
               for name in ("a", "b")]
    await daemons[0].load(CATALOG)
    await daemons[1].daemon.reload_catalog()
    return daemons


async def claimed_by(daemons: list[RunningDaemon], channel: str) -> tuple[RunningDaemon, str]:
    """The one daemon that opened the call on ``channel``, and its call id."""
    def opened(kp: RunningDaemon) -> list[CallOpened]:
        return [o for o in kp.watch.ops if isinstance(o, CallOpened) and o.channel_id == channel]

    async def someone() -> list[tuple[RunningDaemon, CallOpened]]:
        return [(kp, op) for kp in daemons for op in opened(kp)]

    [(owner, op)] = await until(someone, 10, f"a daemon opens the call on {channel}")
    return owner, op.call_id


async def broadcast_call(test_caller: Any, caller_id: str) -> Any:
    return await test_caller.place_call(NUMBER, context="keypress-broadcast",
                                        caller_id=caller_id)


async def test_each_call_goes_to_exactly_one_daemon_and_a_full_one_leaves_it(
        daemon_factory: Any, test_caller: Any) -> None:
    daemons = await two_daemons(daemon_factory, max_calls=1)
    first = await broadcast_call(test_caller, "5551270001")
    owner, first_id = await claimed_by(daemons, first.remote_id)
    await owner.watch.event(first_id, "prompt_started")
    other = daemons[1] if owner is daemons[0] else daemons[0]

    second = await broadcast_call(test_caller, "5551270002")  # the owner is at max_calls 1
    second_owner, second_id = await claimed_by(daemons, second.remote_id)
    assert second_owner is other
    await other.watch.event(second_id, "prompt_started")
    assert owner.daemon.core is not None and other.daemon.core is not None
    assert owner.daemon.core.claimer.counts.declined >= 1

    await first.press("1")
    await second.press("1")
    await owner.watch.event(first_id, "disposition", disposition="sale")
    await other.watch.event(second_id, "disposition", disposition="sale")
    for kp, call_id in ((owner, first_id), (other, second_id)):
        row, events = await kp.stored(call_id)
        assert row.disposition == "sale"
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert owner.daemon.core.claimer.counts.won == 1
    assert other.daemon.core.claimer.counts.won == 1
    ready = await owner.daemon.readiness()
    assert ready["claims"]["won"] == 1 and ready["ready"] is True


async def test_no_claim_runs_the_dialplan_fallback(daemon_factory: Any,
                                                   test_caller: Any) -> None:
    daemons = await two_daemons(daemon_factory, max_calls=1)
    held = [await broadcast_call(test_caller, f"555127001{n}") for n in (1, 2)]
    owners = {id((await claimed_by(daemons, c.remote_id))[0]) for c in held}
    assert len(owners) == 2  # one call each: both are full now
    declined = [kp.daemon.core.claimer.counts.declined for kp in daemons
                if kp.daemon.core is not None]
    third = await broadcast_call(test_caller, "5551270013")  # answered by the fallback
    await third.wait_hangup(10)  # Playback(beep), Hangup(34): nobody claimed it
    assert [o for kp in daemons for o in kp.watch.ops
            if isinstance(o, CallOpened) and o.channel_id == third.remote_id] == []
    now = [kp.daemon.core.claimer.counts.declined for kp in daemons
           if kp.daemon.core is not None]
    assert [b - a for a, b in zip(declined, now, strict=True)] == [1, 1]


async def test_a_stopped_or_draining_daemon_leaves_the_calls_to_the_other(
        daemon_factory: Any, test_caller: Any) -> None:
    a, b = await two_daemons(daemon_factory)
    assert a.daemon.dispatcher is not None
    a.daemon.dispatcher.accepting = False  # draining: it declines every offer
    for n in range(3):
        call = await broadcast_call(test_caller, f"555127002{n}")
        owner, _ = await claimed_by([a, b], call.remote_id)
        assert owner is b
    assert a.daemon.core is not None and a.daemon.core.claimer.counts.declined == 3
    a.daemon.dispatcher.accepting = True
    await a.daemon.stop()  # gone: its app no longer gets the offers
    call = await broadcast_call(test_caller, "5551270029")
    owner, call_id = await claimed_by([a, b], call.remote_id)
    assert owner is b
    await b.watch.event(call_id, "prompt_started")


async def test_a_second_websocket_on_one_app_name_makes_the_first_stand_down(
        daemon_factory: Any) -> None:
    first = await daemon_factory(app="keypress-twin")
    second = await daemon_factory(app="keypress-twin")
    core = first.daemon.core
    assert core is not None

    async def stood_down() -> bool:
        return core.replaced and not core.stream.connected

    await until(stood_down, 10, "the first daemon sees ApplicationReplaced and stops")
    ready = await first.daemon.readiness()
    assert ready["ready"] is False and ready["app_replaced"] is True
    assert (await second.daemon.readiness())["ready"] is True
