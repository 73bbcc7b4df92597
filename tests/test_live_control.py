"""Live-call control on the real Asterisk: external agents at buyers press keys, call control
actions are observed in the audio (TALK_DETECT), continue routing from the buyer's leg,
the buyer conference time limit, digit hygiene, and hangups by either side.

Buyers are test buyers (`Local/NAME@keypress-test-buyers/n`): the daemon holds the buyer
leg, the test holds the buyer's phone and answers, presses keys or hangs up as the agent.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from keypress_ari.ari.events import ChannelDtmfReceived, ChannelTalkingStarted, StasisStart
from tests.support.audio import (
    disable_talk_detect,
    enable_talk_detect,
    falls_quiet,
    hears,
    hears_music,
    no_event_within,
)
from tests.support.buyers import BuyerPhone, TestBuyers
from tests.support.daemon import RunningDaemon
from tests.test_routing import nothing_left

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]

CATALOG = """
flow_groups:
  - name: agent
    flows:
      - {key: "1", name: sale, extra_tokens: {sale: "yes"}, disposition: sale}
      - {key: "2", name: mute, call_control_actions: [mute_consumer]}
      - {key: "3", name: unmute, call_control_actions: [unmute_consumer]}
      - {key: "4", name: hold, call_control_actions: [hold_consumer]}
      - {key: "5", name: unhold, call_control_actions: [unhold_consumer]}
      - key: "6"
        name: beep-buyer
        call_control_actions: [{play: {media: "sound:beep", to: buyer}}]
      - {key: "7", name: transfer, continue_routing: true, buyer_conference_time_limit: 30}
      - {key: "9", name: agent-hangup, call_control_actions: [hangup], disposition: agent_hangup}
      - key: "0"
        name: long-message
        call_control_actions: [{play: {media: "sound:tt-monkeys", to: consumer}}]
  - name: agent-pass-through
    pass_through_digits: true
    flows:
      - {key: "2", name: mute, call_control_actions: [mute_consumer]}
  - name: by-buyer
    flows:
      - key: "1"
        filters: [{token: buyer, op: "==", value: acme}]
        disposition: sale_acme
      - {key: "1", disposition: sale_other}
routers:
  - {name: r, request_key_press: false, buyers: [acme, globex]}
  - {name: g, request_key_press: false, buyers: [globex, acme]}
  - {name: f, request_key_press: false, buyers: [initech]}
  - {name: h, request_key_press: false, buyers: [hooli]}
buyers:
  - {name: acme, endpoint: "Local/acme@keypress-test-buyers/n",
     forwards_to_external_agent: true, flow_group: agent}
  - {name: globex, endpoint: "Local/globex@keypress-test-buyers/n",
     forwards_to_external_agent: true, flow_group: agent}
  - {name: initech, endpoint: "Local/initech@keypress-test-buyers/n",
     forwards_to_external_agent: true, flow_group: by-buyer}
  - {name: hooli, endpoint: "Local/hooli@keypress-test-buyers/n",
     forwards_to_external_agent: true, flow_group: agent-pass-through}
numbers:
  - {number: "303", router: h}
  - {number: "300", router: r}
  - {number: "301", router: g}
  - {number: "302", router: f}
"""


@pytest.fixture
async def kp(daemon: RunningDaemon) -> RunningDaemon:
    await daemon.load(CATALOG)
    return daemon


class Live:
    """A bridged call: the caller's phone, the buyer's phone and the daemon's call id."""

    def __init__(self, call: Any, call_id: str, buyer: BuyerPhone) -> None:
        self.call, self.call_id, self.buyer = call, call_id, buyer


async def connect(kp: RunningDaemon, test_caller: Any, number: str = "300",
                  buyer: str = "acme") -> Live:
    buyers = TestBuyers(test_caller)
    call = await test_caller.place_call(number, wait_answer=False)
    phone = await buyers.next_leg(buyer)
    await phone.answer()
    await test_caller.wait_event(StasisStart, call.local_id)  # the caller is answered now
    call_id = await kp.watch.call_id_for(call.remote_id)
    await kp.watch.event(call_id, "bridged", buyer=buyer)
    return Live(call, call_id, phone)




async def test_agent_key_sets_a_disposition_and_ends_both_legs(kp: RunningDaemon,
                                                               test_caller: Any) -> None:
    live = await connect(kp, test_caller)
    await live.buyer.press("1")
    await live.call.wait_hangup(10)
    await live.buyer.wait_hangup(10)
    row, events = await kp.stored(live.call_id)
    press = next(e for e in events if e.kind == "key_press")
    assert (press.leg, press.digit, press.flow) == ("buyer", "1", "agent/sale")
    assert row.disposition == "sale" and row.tokens["sale"] == "yes"
    assert row.ended_by == "daemon"
    assert kp.daemon.ari is not None
    await nothing_left(kp.daemon.ari)


async def test_mute_and_unmute_the_consumer(kp: RunningDaemon, test_caller: Any) -> None:
    live = await connect(kp, test_caller)
    caller_phone, buyer_phone = live.call.local_id, live.buyer.channel_id
    assert await hears(test_caller, buyer_phone, caller_phone)
    await live.buyer.press("2")
    muted = await kp.watch.event(live.call_id, "call_control_action", action="mute_consumer")
    assert muted.detail["outcome"] == "ok"
    assert not await hears(test_caller, buyer_phone, caller_phone)
    assert await hears(test_caller, caller_phone, buyer_phone)  # the caller still hears
    await live.buyer.press("3")
    await kp.watch.event(live.call_id, "call_control_action", action="unmute_consumer")
    assert await hears(test_caller, buyer_phone, caller_phone)


async def test_hold_and_unhold_the_consumer(kp: RunningDaemon, test_caller: Any) -> None:
    live = await connect(kp, test_caller)
    caller_phone, buyer_phone = live.call.local_id, live.buyer.channel_id
    await live.buyer.press("4")
    held = await kp.watch.event(live.call_id, "call_control_action", action="hold_consumer")
    assert held.detail["outcome"] == "ok"
    assert await hears_music(test_caller, caller_phone)
    assert not await hears(test_caller, buyer_phone, caller_phone)
    await live.buyer.press("5")
    await kp.watch.event(live.call_id, "call_control_action", action="unhold_consumer")
    assert await falls_quiet(test_caller, caller_phone)
    assert await hears(test_caller, buyer_phone, caller_phone)


async def test_play_to_the_buyer(kp: RunningDaemon, test_caller: Any) -> None:
    live = await connect(kp, test_caller)
    buyer_phone = live.buyer.channel_id
    since = test_caller.mark()
    await enable_talk_detect(test_caller.client, buyer_phone)
    try:
        await live.buyer.press("6")
        await test_caller.wait_event(ChannelTalkingStarted, buyer_phone, since=since)
    finally:
        await disable_talk_detect(test_caller.client, buyer_phone)
    action = await kp.watch.event(live.call_id, "call_control_action", action="play")
    assert action.detail["result"] == "playing sound:beep to buyer"


async def test_continue_routing_from_the_buyer_leg(kp: RunningDaemon, test_caller: Any) -> None:
    live = await connect(kp, test_caller)
    buyers = TestBuyers(test_caller)
    await live.buyer.press("7")
    await live.buyer.wait_hangup(10)  # the first buyer is dropped
    globex = await buyers.next_leg("globex")
    await globex.answer()
    await kp.watch.event(live.call_id, "bridged", buyer="globex")
    assert await hears(test_caller, globex.channel_id, live.call.local_id)
    kinds = kp.watch.kinds(live.call_id)
    assert "call_ended" not in kinds  # the caller stayed on the line throughout
    dropped = await kp.watch.event(live.call_id, "buyer_dropped")
    assert dropped.detail["buyer"] == "acme"
    await live.call.hangup()
    ended = await kp.watch.event(live.call_id, "call_ended")
    assert ended.detail["ended_by"] == "caller"
    row, _ = await kp.stored(live.call_id)
    assert [k.split(":")[1] for k in row.legs if k.startswith("buyer:")] == ["acme", "globex"]


async def test_conference_time_limit_ignores_a_late_press(kp: RunningDaemon,
                                                          test_caller: Any) -> None:
    live = await connect(kp, test_caller)
    ctx = kp.daemon.dispatcher.ctx  # type: ignore[union-attr]
    ctx.clock = lambda: time.time() + 31  # the buyer has been in the bridge for 31 s
    await live.buyer.press("7")
    late = await kp.watch.event(live.call_id, "key_press", digit="7")
    assert late.detail["ignored"] is True and late.flow == "agent/transfer"
    assert "limit 30s" in late.detail["reason"]
    assert not [e for e in kp.watch.events(live.call_id)
                if e.kind == "continue_routing" and e.flow == "agent/transfer"]
    ctx.clock = time.time  # back within the limit: honoured
    await live.buyer.press("7")
    await kp.watch.event(live.call_id, "continue_routing", flow="agent/transfer")


async def test_filters_see_the_buyer_name(kp: RunningDaemon, test_caller: Any) -> None:
    live = await connect(kp, test_caller, number="302", buyer="initech")
    await live.buyer.press("1")
    await live.call.wait_hangup(10)
    row, _ = await kp.stored(live.call_id)
    assert row.disposition == "sale_other"  # the acme-only flow did not match initech


async def test_flow_digits_are_kept_from_the_caller(kp: RunningDaemon,
                                                    test_caller: Any) -> None:
    live = await connect(kp, test_caller)
    since = test_caller.mark()
    await live.buyer.press("#")  # no flow for it: passed on to the caller
    passed = await test_caller.wait_event(ChannelDtmfReceived, live.call.local_id, since=since)
    assert passed.digit == "#"
    since = test_caller.mark()
    await live.buyer.press("2")  # a flow key: absorbed
    await kp.watch.event(live.call_id, "call_control_action", action="mute_consumer")
    assert await no_event_within(
        test_caller,
        lambda e: isinstance(e, ChannelDtmfReceived) and e.channel.id == live.call.local_id,
        since=since)


async def test_agent_hangup_action(kp: RunningDaemon, test_caller: Any) -> None:
    live = await connect(kp, test_caller, number="301", buyer="globex")
    await live.buyer.press("9")
    await live.call.wait_hangup(10)
    row, events = await kp.stored(live.call_id)
    kinds = [e.kind for e in events]
    assert kinds.index("call_control_action") < kinds.index("disposition") < kinds.index("hangup")
    assert row.disposition == "agent_hangup"
    assert kp.daemon.ari is not None
    await nothing_left(kp.daemon.ari)


async def test_buyer_hangs_up_while_bridged(kp: RunningDaemon, test_caller: Any) -> None:
    live = await connect(kp, test_caller)
    await live.buyer.hangup()
    await live.call.wait_hangup(10)
    ended = await kp.watch.event(live.call_id, "call_ended")
    assert ended.detail["ended_by"] == "buyer"
    assert "buyer_hangup" in kp.watch.kinds(live.call_id)
    assert kp.daemon.ari is not None
    await nothing_left(kp.daemon.ari)
    assert dict(kp.daemon.dispatcher.ctx.limits.live) == {}  # type: ignore[union-attr]


async def test_caller_hangs_up_during_a_playback(kp: RunningDaemon, test_caller: Any) -> None:
    live = await connect(kp, test_caller)
    await live.buyer.press("0")
    await kp.watch.event(live.call_id, "call_control_action", action="play")
    await live.call.hangup()
    await live.buyer.wait_hangup(10)
    ended = await kp.watch.event(live.call_id, "call_ended")
    assert ended.detail["ended_by"] == "caller"
    assert kp.daemon.ari is not None
    await nothing_left(kp.daemon.ari)


async def test_buyer_rejects_then_the_next_buyer_answers(kp: RunningDaemon,
                                                         test_caller: Any) -> None:
    buyers = TestBuyers(test_caller)
    call = await test_caller.place_call("300", wait_answer=False)
    acme = await buyers.next_leg("acme")
    await acme.reject("busy")
    globex = await buyers.next_leg("globex")
    await globex.answer()
    call_id = await kp.watch.call_id_for(call.remote_id)
    await kp.watch.event(call_id, "bridged", buyer="globex")
    failed = await kp.watch.event(call_id, "buyer_failed")
    assert failed.detail["buyer"] == "acme" and failed.detail["reason"] == "BUSY"


async def test_buyer_hangs_up_while_ringing(kp: RunningDaemon, test_caller: Any) -> None:
    buyers = TestBuyers(test_caller)
    call = await test_caller.place_call("302", wait_answer=False)
    initech = await buyers.next_leg("initech")
    await initech.ring()
    await initech.hangup("normal")
    call_id = await kp.watch.call_id_for(call.remote_id)
    await kp.watch.event(call_id, "call_ended")
    row, events = await kp.stored(call_id)
    failed = next(e for e in events if e.kind == "buyer_failed")
    assert failed.detail["cause"] == 16
    assert row.disposition == "no_buyer_available"
    assert kp.daemon.ari is not None
    await nothing_left(kp.daemon.ari)


async def test_pass_through_digits_reach_the_caller(kp: RunningDaemon, test_caller: Any) -> None:
    live = await connect(kp, test_caller, number="303", buyer="hooli")
    since = test_caller.mark()
    await live.buyer.press("2")
    heard = await test_caller.wait_event(ChannelDtmfReceived, live.call.local_id, since=since)
    assert heard.digit == "2"
    action = await kp.watch.event(live.call_id, "call_control_action", action="mute_consumer")
    assert action.detail["outcome"] == "ok"
