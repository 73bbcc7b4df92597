"""The ami mode on the real Asterisk: a plain ``Dial()`` (``keypress-dial-ami``) with nothing
for keypress-ari in the dialplan; the daemon sees the keys as AMI ``DTMFEnd`` events and
acts with AMI actions; the same call log. Stasis calls are left to the Stasis mode."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keypress_ari.calllog.ops import CallOpened
from tests.support.buyers import BuyerPhone, TestBuyers
from tests.support.daemon import RunningDaemon

NUMBER = "18005550188"

CATALOG = """
flow_groups:
  - name: agent-keys
    modes: [ami]
    flows:
      - key: "1"
        filters: [{token: qualified, op: "==", value: "yes"}]
        name: sale
        disposition: sale
      - {key: "1", name: not-qualified, disposition: not_qualified}
      - {key: "2", name: mute, call_control_actions: [mute_consumer]}
      - {key: "3", name: unmute, call_control_actions: [unmute_consumer]}
  - name: caller-keys
    modes: [ami]
    flows:
      - {key: "0", name: qualify, extra_tokens: {qualified: "yes"}}
  - name: prompt
    flows:
      - {key: "1", disposition: stasis_sale}
routers:
  - {name: dial-router, request_key_press: false, buyers: [acme]}
  - {name: stasis-router, request_key_press: true, prompt: "sound:beep", press_1_timeout: 30,
     flow_group: prompt}
buyers:
  - {name: acme, endpoint: "Local/agent@keypress-test-buyers/n",
     forwards_to_external_agent: true, flow_group: agent-keys}
numbers:
  - {number: "@NUMBER@", router: dial-router, keypress_controls: true, flow_group: caller-keys}
  - {number: "18005550189", router: stasis-router}
""".replace("@NUMBER@", NUMBER)


@pytest.fixture
async def ami_daemon(daemon_factory: Any) -> RunningDaemon:
    running: RunningDaemon = await daemon_factory(ami=True)
    await running.load(CATALOG)
    return running


async def dial_call(test_caller: Any, caller_id: str) -> tuple[Any, BuyerPhone]:
    placing = asyncio.create_task(test_caller.place_call(
        NUMBER, context="keypress-dial-ami", caller_id=caller_id))
    phone = await TestBuyers.of(test_caller).next_leg("agent")
    await phone.answer()
    call = await placing
    assert call.answered
    return call, phone


async def opened(running: RunningDaemon) -> str:
    op = await running.watch.wait_for(
        lambda o: isinstance(o, CallOpened) and o.number == NUMBER)
    assert isinstance(op, CallOpened)
    return op.call_id


async def test_agent_key_ends_the_call_over_ami(ami_daemon: RunningDaemon,
                                               test_caller: Any) -> None:
    call, phone = await dial_call(test_caller, "5551240001")
    await phone.press("1")
    call_id = await opened(ami_daemon)
    press = await ami_daemon.watch.event(call_id, "key_press", leg="buyer", digit="1")
    assert press.flow == "agent-keys/not-qualified" and press.detail["duration_ms"] >= 50
    await ami_daemon.watch.event(call_id, "disposition", disposition="not_qualified")
    await call.wait_hangup(10)
    await phone.wait_hangup(10)
    row, events = await ami_daemon.stored(call_id)
    assert row.disposition == "not_qualified" and row.ended_by == "daemon"
    started = events[0].detail
    assert started["mode"] == "ami" and started["buyer"] == "acme"
    calls = ami_daemon.daemon.ami_calls
    assert calls is not None and calls.native_rtp_loaded is True  # asterisk/etc loads it
    assert started["conference_from"] == "DialEnd"  # the buyer's answer, from AMI
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_tokens_and_mute_then_the_caller_hangs_up(ami_daemon: RunningDaemon,
                                                       test_caller: Any) -> None:
    call, phone = await dial_call(test_caller, "5551240002")
    await call.press("0")
    call_id = await opened(ami_daemon)
    await ami_daemon.watch.event(call_id, "tokens_set", source="flow")
    value = await test_caller.client.get_variable(call.remote_id, "KEYPRESS_TOKEN_QUALIFIED")
    assert value == "yes"  # Setvar on the caller's channel
    await phone.press("2")
    muted = await ami_daemon.watch.event(call_id, "call_control_action",
                                         action="mute_consumer")
    assert muted.detail["outcome"] == "ok", muted.detail
    await phone.press("3")
    unmuted = await ami_daemon.watch.event(call_id, "call_control_action",
                                           action="unmute_consumer")
    assert unmuted.detail["outcome"] == "ok"
    await call.hangup()
    ended = await ami_daemon.watch.event(call_id, "call_ended")
    assert ended.detail["ended_by"] == "unknown"
    calls = ami_daemon.daemon.ami_calls
    assert calls is not None and calls.active_calls == 0 and calls.tracker.calls == 0


async def test_stasis_calls_are_left_to_the_stasis_mode(ami_daemon: RunningDaemon,
                                                       test_caller: Any) -> None:
    call, call_id = await ami_daemon.enter(test_caller, "18005550189")
    await ami_daemon.watch.event(call_id, "prompt_started")
    await call.press("1")
    await ami_daemon.watch.event(call_id, "disposition", disposition="stasis_sale")
    await call.wait_hangup(10)
    calls = ami_daemon.daemon.ami_calls
    assert calls is not None
    await calls.idle(5)
    opened_calls = [o for o in ami_daemon.watch.ops if isinstance(o, CallOpened)]
    assert [o.call_id for o in opened_calls] == [call_id]


async def test_a_restarted_daemon_finds_its_ami_calls_again(daemon_factory: Any,
                                                           test_caller: Any) -> None:
    first: RunningDaemon = await daemon_factory(ami=True)
    await first.load(CATALOG)
    call, phone = await dial_call(test_caller, "5551240003")
    await call.press("0")
    call_id = await opened(first)
    await first.watch.event(call_id, "tokens_set", source="flow")
    # a second call that ends while no daemon runs
    other, other_phone = await dial_call(test_caller, "5551240004")
    await other.press("0")
    other_id = await first.watch.wait_for(
        lambda o: isinstance(o, CallOpened) and o.call_id != call_id and o.number == NUMBER)
    assert isinstance(other_id, CallOpened)
    await first.watch.event(other_id.call_id, "tokens_set", source="flow")
    await first.daemon.stop()
    await other.hangup()
    await other_phone.wait_hangup(10)

    second: RunningDaemon = await daemon_factory(ami=True)
    # the call that ended meanwhile is closed once AMI lists the live channels
    ended = await second.watch.event(other_id.call_id, "call_ended")
    assert "gone" in ended.detail["reason"]
    await phone.press("1")  # the token from before the restart still steers the match
    press = await second.watch.event(call_id, "key_press", leg="buyer", digit="1")
    assert press.flow == "agent-keys/sale"
    await call.wait_hangup(10)
    _, events = await second.stored(call_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert sum(e.kind == "call_started" for e in events) == 1
