"""Routing to buyers on the real Asterisk, with dialplan buyers (Local channels into
`keypress-buyers`: answer, busy, congestion, noanswer): next available buyer, failures,
no buyer left, max_concurrency, number key press controls, hangups that leave nothing behind.
"""

from __future__ import annotations

from typing import Any

import pytest

from keypress_ari.ari.client import AriClient
from tests.support.daemon import RunningDaemon
from tests.support.process import until

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]

CATALOG = """
flow_groups:
  - name: press-one
    flows:
      - {key: "1", continue_routing: true}
      - {key: "2", disposition: not_interested}
  - name: caller-controls
    flows:
      - {key: "#", disposition: caller_done}
      - key: "*"
        call_control_actions: [{play: {media: "sound:beep", to: consumer}}]
      - {key: "9", call_control_actions: [{block_caller: {reason: asked}}], disposition: dnc}
routers:
  - {name: busy-first, prompt: "sound:beep", flow_group: press-one, buyers: [busy, answer]}
  - {name: noanswer-first, prompt: "sound:beep", flow_group: press-one,
     buyers: [noanswer, answer]}
  - {name: nobody, prompt: "sound:beep", flow_group: press-one, buyers: [busy, congestion, retired],
     no_buyer_prompt: "sound:beep"}
  - {name: direct, request_key_press: false, buyers: [answer]}
  - {name: limited, request_key_press: false, buyers: [one-at-a-time, answer]}
  - {name: slow, request_key_press: false, buyers: [ringing-forever]}
buyers:
  - {name: answer, endpoint: "Local/answer@keypress-buyers/n"}
  - {name: busy, endpoint: "Local/busy@keypress-buyers/n"}
  - {name: congestion, endpoint: "Local/congestion@keypress-buyers/n"}
  - {name: noanswer, endpoint: "Local/noanswer@keypress-buyers/n", ring_timeout: 1}
  - {name: ringing-forever, endpoint: "Local/noanswer@keypress-buyers/n", ring_timeout: 60}
  - {name: one-at-a-time, endpoint: "Local/answer@keypress-buyers/n", max_concurrency: 1}
  - {name: retired, endpoint: "Local/answer@keypress-buyers/n", enabled: false}
numbers:
  - {number: "200", router: busy-first}
  - {number: "201", router: noanswer-first}
  - {number: "202", router: nobody}
  - {number: "203", router: direct, keypress_controls: true, flow_group: caller-controls}
  - {number: "204", router: limited}
  - {number: "205", router: slow}
"""


@pytest.fixture
async def kp(daemon: RunningDaemon) -> RunningDaemon:
    await daemon.load(CATALOG)
    return daemon


async def nothing_left(ari: AriClient, timeout: float = 5.0) -> None:
    """Wait (bounded) until Asterisk has no channel and no bridge left."""
    left: list[str] = []

    async def empty() -> bool:
        channels, bridges = await ari.list_channels(), await ari.list_bridges()
        left[:] = [f"channel {c.name} ({c.id}, {c.state})" for c in channels] + [
            f"bridge {b.id}" for b in bridges]
        return not left
    try:
        await until(empty, timeout, "no channel and no bridge left")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {left}") from None


def buyers_in(events: list[Any], kind: str) -> list[tuple[str, str | None]]:
    return [(e.detail["buyer"], e.detail.get("reason")) for e in events if e.kind == kind]


async def test_busy_buyer_then_the_next_one_answers(kp: RunningDaemon, test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "200")
    await kp.watch.event(call_id, "prompt_started")
    await call.press("1")
    bridged = await kp.watch.event(call_id, "bridged")
    assert bridged.detail["buyer"] == "answer"
    await call.hangup()
    await kp.watch.event(call_id, "call_ended")
    row, events = await kp.stored(call_id)
    assert buyers_in(events, "dialing") == [("busy", None), ("answer", None)]
    assert buyers_in(events, "buyer_failed") == [("busy", "BUSY")]
    assert row.ended_by == "caller" and row.legs["caller"] == call.remote_id
    assert {k.split(":")[1] for k in row.legs if k.startswith("buyer:")} == {"busy", "answer"}
    assert kp.daemon.ari is not None
    await nothing_left(kp.daemon.ari)


async def test_no_answer_within_ring_timeout_moves_on(kp: RunningDaemon,
                                                      test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "201")
    await kp.watch.event(call_id, "prompt_started")
    await call.press("1")
    await kp.watch.event(call_id, "bridged", buyer="answer", timeout=15)
    failed = await kp.watch.event(call_id, "buyer_failed")
    assert failed.detail == {"buyer": "noanswer", "reason": "NOANSWER", "cause": 19}
    # Not asserted here: buyer_ringing. With a 1 s ring timeout a loaded Asterisk can time
    # the dial out before the buyer's dialplan reaches Ringing() (a CI failure); the
    # ringing-forever buyer below proves buyer_ringing.


async def test_no_buyer_left_plays_the_prompt_and_hangs_up(kp: RunningDaemon,
                                                           test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "202")
    await kp.watch.event(call_id, "prompt_started")
    await call.press("1")
    await call.wait_hangup(15)
    row, events = await kp.stored(call_id)
    assert [b for b, _ in buyers_in(events, "buyer_failed")] == ["busy", "congestion"]
    assert buyers_in(events, "buyer_skipped") == [("retired", "disabled")]
    assert next(e for e in events if e.kind == "no_buyer_available").detail["tried"] == [
        "busy", "congestion"]
    final = [e for e in events if e.kind == "prompt_started"][-1]
    assert final.detail["purpose"] == "no buyer available"
    assert row.disposition == "no_buyer_available" and row.ended_by == "daemon"
    assert kp.daemon.ari is not None
    await nothing_left(kp.daemon.ari)


async def test_router_without_key_press_routes_at_once(kp: RunningDaemon,
                                                       test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "203")
    await kp.watch.event(call_id, "bridged")
    kinds = kp.watch.kinds(call_id)
    assert "prompt_started" not in kinds
    # The caller is answered only when the buyer answers.
    assert kinds.index("buyer_answered") < kinds.index("answered") < kinds.index("bridged")
    await call.hangup()
    await kp.watch.event(call_id, "call_ended", ended_by="caller")
    assert kp.daemon.ari is not None
    await nothing_left(kp.daemon.ari)


async def test_caller_presses_a_number_controls_key_mid_call(kp: RunningDaemon,
                                                             test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "203")
    await kp.watch.event(call_id, "bridged")
    await call.press("#")
    await call.wait_hangup(10)
    row, events = await kp.stored(call_id)
    press = next(e for e in events if e.kind == "key_press")
    assert (press.leg, press.digit, press.flow) == ("caller", "#", "caller-controls/key # #1")
    assert row.disposition == "caller_done" and row.ended_by == "daemon"
    kinds = [e.kind for e in events]
    assert kinds.index("disposition") < kinds.index("hangup") < kinds.index("call_ended")
    assert kp.daemon.ari is not None
    await nothing_left(kp.daemon.ari)


async def test_play_action_and_unused_digit(kp: RunningDaemon, test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "203")
    await kp.watch.event(call_id, "bridged")
    since = test_caller.mark()
    await call.press("*")
    action = await kp.watch.event(call_id, "call_control_action", action="play")
    assert action.detail["outcome"] == "ok" and action.flow == "caller-controls/key * #1"
    # The playback runs on the caller's channel (the test app watches both halves).
    started = await test_caller.wait_for(
        lambda e: e.type == "PlaybackStarted"
        and e.playback.target_uri == f"channel:{call.remote_id}", since=since)
    assert started.playback.media_uri == "sound:beep"
    await call.press("5")
    unused = await kp.watch.event(call_id, "key_press", digit="5")
    assert unused.detail["matched"] is False and unused.detail["passed_on"] is True


async def test_block_caller_rejects_the_next_call(kp: RunningDaemon, test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "203", caller_id="5550009")
    await kp.watch.event(call_id, "bridged")
    await call.press("9")
    await call.wait_hangup(10)
    action = await kp.watch.event(call_id, "call_control_action", action="block_caller")
    assert action.detail["outcome"] == "ok"
    again, again_id = await kp.enter(test_caller, "203", caller_id="5550009")
    await again.wait_hangup(10)
    _row, events = await kp.stored(again_id)
    assert [e.kind for e in events] == ["call_started", "blocked_caller", "hangup", "call_ended"]
    assert events[2].detail["cause"] == "rejected"
    assert "dialing" not in [e.kind for e in events]
    async with kp.daemon.pool.acquire() as conn:
        blocked = await conn.fetchrow("SELECT * FROM blocklist WHERE caller_number = '5550009'")
    assert blocked["reason"] == "asked" and str(blocked["call_id"]) == call_id


async def test_max_concurrency_is_respected(kp: RunningDaemon, test_caller: Any) -> None:
    first, first_id = await kp.enter(test_caller, "204")
    await kp.watch.event(first_id, "bridged", buyer="one-at-a-time")
    _second, second_id = await kp.enter(test_caller, "204")
    await kp.watch.event(second_id, "bridged", buyer="answer")
    skipped = await kp.watch.event(second_id, "buyer_skipped")
    assert skipped.detail == {"buyer": "one-at-a-time", "reason": "at max_concurrency 1"}
    await first.hangup()
    await kp.watch.event(first_id, "call_ended")
    _third, third_id = await kp.enter(test_caller, "204")
    await kp.watch.event(third_id, "bridged", buyer="one-at-a-time")  # released again


async def test_caller_hangs_up_while_the_buyer_rings(kp: RunningDaemon,
                                                     test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "205", wait_answer=False)
    await kp.watch.event(call_id, "buyer_ringing")
    await call.hangup()
    ended = await kp.watch.event(call_id, "call_ended")
    assert ended.detail["stage"] == "routing" and ended.detail["ended_by"] == "caller"
    assert kp.daemon.ari is not None
    await nothing_left(kp.daemon.ari)
    row, _ = await kp.stored(call_id)
    assert row.ended_at is not None
    assert kp.daemon.dispatcher is not None and kp.daemon.dispatcher.active_calls == 0
    assert dict(kp.daemon.dispatcher.ctx.limits.live) == {}


async def test_caller_hangs_up_while_bridged(kp: RunningDaemon, test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "203")
    await kp.watch.event(call_id, "bridged")
    await call.hangup()
    ended = await kp.watch.event(call_id, "call_ended")
    assert ended.detail["stage"] == "bridged"
    assert kp.daemon.ari is not None
    await nothing_left(kp.daemon.ari)


async def test_duplicate_digit_is_ignored(daemon_factory: Any, test_caller: Any) -> None:
    kp = await daemon_factory(dtmf_dedup_ms=1000)
    await kp.load(CATALOG)
    call, call_id = await kp.enter(test_caller, "203")
    await kp.watch.event(call_id, "bridged")
    await call.press("**", duration_ms=100, between_ms=100)
    dup = await kp.watch.event(call_id, "key_press", ignored=True)
    assert dup.digit == "*" and dup.detail["reason"] == "duplicate within 1000 ms"
    presses = [e for e in kp.watch.events(call_id) if e.kind == "key_press"]
    assert [p.detail.get("matched") for p in presses] == [True, False]
