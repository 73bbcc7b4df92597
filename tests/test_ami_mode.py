"""The ami mode on the real Asterisk: a plain ``Dial()`` (``keypress-dial-ami``) with nothing
for keypress-ari in the dialplan; the daemon sees the keys as AMI ``DTMFEnd`` events and
acts with AMI actions; the same call log. Stasis calls are left to the Stasis mode."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keypress_ari.ami.tracker import FOLLOWED_EVENTS
from keypress_ari.ari.events import ChannelDtmfReceived
from keypress_ari.calllog.ops import CallOpened
from tests.support.audio import falls_quiet, hears, hears_music
from tests.support.buyers import BuyerPhone, TestBuyers
from tests.support.daemon import RunningDaemon
from tests.support.process import until
from tests.support.prom import sample
from tests.support.tcpproxy import TcpProxy

NUMBER = "18005550188"

CATALOG = """
flow_groups:
  - name: agent-keys
    modes: [ami, stasis]   # stasis: hold and continue routing move the call into the app
    flows:
      - key: "1"
        filters: [{token: qualified, op: "==", value: "yes"}]
        name: sale
        disposition: sale
      - {key: "1", name: not-qualified, disposition: not_qualified}
      - {key: "2", name: mute, call_control_actions: [mute_consumer]}
      - {key: "3", name: unmute, call_control_actions: [unmute_consumer]}
      - {key: "4", name: hold, call_control_actions: [hold_consumer]}
      - {key: "5", name: unhold, call_control_actions: [unhold_consumer]}
      - {key: "7", name: transfer, continue_routing: true}
  - name: caller-keys
    modes: [ami]
    flows:
      - {key: "0", name: qualify, extra_tokens: {qualified: "yes"}}
      - {key: "9", name: caller-done, disposition: caller_done}
  - name: prompt
    flows:
      - {key: "1", disposition: stasis_sale}
routers:
  - {name: dial-router, request_key_press: false, buyers: [acme, globex]}
  - {name: stasis-router, request_key_press: true, prompt: "sound:beep", press_1_timeout: 30,
     flow_group: prompt}
buyers:
  - {name: acme, endpoint: "Local/agent@keypress-test-buyers/n",
     forwards_to_external_agent: true, flow_group: agent-keys}
  - {name: globex, endpoint: "Local/globex@keypress-test-buyers/n",
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


async def sale_ends_one_log(running: RunningDaemon, call: Any, phone: BuyerPhone,
                            call_id: str) -> None:
    """The agent presses 1 on a qualified call: sale, the call ends, one log in order."""
    await phone.press("1")
    press = await running.watch.event(call_id, "key_press", leg="buyer", digit="1")
    assert press.flow == "agent-keys/sale"
    await call.wait_hangup(10)
    _, events = await running.stored(call_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert sum(e.kind == "call_started" for e in events) == 1


@pytest.mark.parametrize("leg, digit, flow, disposition", [
    ("buyer", "1", "agent-keys/not-qualified", "not_qualified"),
    ("caller", "9", "caller-keys/caller-done", "caller_done"),
])
async def test_a_key_ends_the_call_over_ami(ami_daemon: RunningDaemon, test_caller: Any,
                                           leg: str, digit: str, flow: str,
                                           disposition: str) -> None:
    calls = ami_daemon.daemon.ami_calls
    assert calls is not None and calls.events_filtered is True
    names: list[str | None] = []
    seen_by_the_mode = calls.on_event

    def noting(message: dict[str, str]) -> None:  # what reaches the mode from AMI
        names.append(message.get("Event"))
        seen_by_the_mode(message)

    calls.on_event = noting  # type: ignore[method-assign]
    call, phone = await dial_call(test_caller, f"555124000{digit}")
    await (phone if leg == "buyer" else call).press(digit)
    call_id = await opened(ami_daemon)
    press = await ami_daemon.watch.event(call_id, "key_press", leg=leg, digit=digit)
    assert press.flow == flow and press.detail["duration_ms"] >= 50
    assert press.detail["mode"] == "ami"
    group, label = flow.split("/")
    assert sample(ami_daemon.daemon.metrics.render(), "keypress_key_presses_total",
                  mode="ami", group=group, flow=label, outcome="matched") == 1
    await ami_daemon.watch.event(call_id, "disposition", disposition=disposition)
    await call.wait_hangup(10)
    await phone.wait_hangup(10)  # both legs: AMI Hangup
    row, events = await ami_daemon.stored(call_id)
    assert row.disposition == disposition and row.ended_by == "daemon"
    started = events[0].detail
    assert started["mode"] == "ami" and started["buyer"] == "acme"
    assert calls.native_rtp_loaded is True  # asterisk/etc loads it
    assert started["conference_from"] == "DialEnd"  # the buyer's answer, from AMI
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # the session filter: only what the tracker follows (no Newexten, VarSet, Newstate...)
    assert "DTMFEnd" in names and "DialBegin" in names
    assert set(names) <= {*FOLLOWED_EVENTS, None}, set(names) - set(FOLLOWED_EVENTS)


async def test_tokens_and_mute_then_the_caller_hangs_up(ami_daemon: RunningDaemon,
                                                       test_caller: Any) -> None:
    call, phone = await dial_call(test_caller, "5551240002")
    await call.press("0")
    call_id = await opened(ami_daemon)
    await ami_daemon.watch.event(call_id, "tokens_set", source="flow")
    value = await test_caller.client.get_variable(call.remote_id, "KEYPRESS_TOKEN_QUALIFIED")
    assert value == "yes"  # Setvar on the caller's channel
    caller_phone, buyer_phone = call.local_id, phone.channel_id
    assert await hears(test_caller, buyer_phone, caller_phone)
    await phone.press("2")
    muted = await ami_daemon.watch.event(call_id, "call_control_action",
                                         action="mute_consumer")
    assert muted.detail["outcome"] == "ok", muted.detail
    assert not await hears(test_caller, buyer_phone, caller_phone)  # MuteAudio on the caller
    assert await hears(test_caller, caller_phone, buyer_phone)  # who still hears the buyer
    await phone.press("3")
    unmuted = await ami_daemon.watch.event(call_id, "call_control_action",
                                           action="unmute_consumer")
    assert unmuted.detail["outcome"] == "ok"
    assert await hears(test_caller, buyer_phone, caller_phone)
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
    # the token from before the restart still steers the match
    await sale_ends_one_log(second, call, phone, call_id)


async def test_continue_routing_moves_the_call_into_stasis(ami_daemon: RunningDaemon,
                                                          test_caller: Any) -> None:
    call, phone = await dial_call(test_caller, "5551240005")
    await phone.press("7")
    call_id = await opened(ami_daemon)
    moving = await ami_daemon.watch.event(call_id, "moving_to_stasis")
    assert moving.detail["reason"] == "continue routing" and moving.digit == "7"
    assert moving.detail["mode"] == "ami"
    await ami_daemon.watch.event(call_id, "entered_stasis")
    press = await ami_daemon.watch.event(call_id, "key_press", leg="buyer", digit="7")
    assert press.flow == "agent-keys/transfer"
    assert press.detail["mode"] == "stasis"  # handled by the Stasis mode, once moved
    await phone.wait_hangup(10)  # acme is dropped
    globex = await TestBuyers.of(test_caller).next_leg("globex")
    await globex.answer()
    await ami_daemon.watch.event(call_id, "bridged", buyer="globex")
    assert await hears(test_caller, globex.channel_id, call.local_id)
    assert await hears(test_caller, call.local_id, globex.channel_id)
    dropped = await ami_daemon.watch.event(call_id, "buyer_dropped")
    assert dropped.detail["buyer"] == "acme"
    assert "call_ended" not in ami_daemon.watch.kinds(call_id)  # the caller stayed on
    await call.hangup()
    ended = await ami_daemon.watch.event(call_id, "call_ended")
    assert ended.detail["ended_by"] == "caller"
    row, events = await ami_daemon.stored(call_id)
    assert [k.split(":")[1] for k in row.legs if k.startswith("buyer:")] == ["acme", "globex"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # one log, one order
    assert sum(e.kind == "call_started" for e in events) == 1
    assert events[0].detail["mode"] == "ami"
    calls = ami_daemon.daemon.ami_calls
    assert calls is not None
    await calls.idle(5)
    assert calls.active_calls == 0


async def test_hold_moves_the_call_into_stasis(ami_daemon: RunningDaemon,
                                              test_caller: Any) -> None:
    call, phone = await dial_call(test_caller, "5551240006")
    caller_phone, buyer_phone = call.local_id, phone.channel_id
    await phone.press("4")
    call_id = await opened(ami_daemon)
    held = await ami_daemon.watch.event(call_id, "call_control_action", action="hold_consumer")
    assert held.detail["outcome"] == "ok"
    assert await hears_music(test_caller, caller_phone)
    assert not await hears(test_caller, buyer_phone, caller_phone)
    await phone.press("5")  # now a Stasis call's key
    await ami_daemon.watch.event(call_id, "call_control_action", action="unhold_consumer")
    assert await falls_quiet(test_caller, caller_phone)
    assert await hears(test_caller, buyer_phone, caller_phone)
    await phone.press("1")
    await ami_daemon.watch.event(call_id, "disposition", disposition="not_qualified")
    await call.wait_hangup(10)
    row, events = await ami_daemon.stored(call_id)
    assert row.disposition == "not_qualified"
    kinds = [e.kind for e in events]
    assert kinds.index("moving_to_stasis") < kinds.index("entered_stasis") < kinds.index(
        "call_control_action")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_an_unmatched_digit_reaches_the_other_party(ami_daemon: RunningDaemon,
                                                         test_caller: Any) -> None:
    call, phone = await dial_call(test_caller, "5551240007")
    since = test_caller.mark()
    await phone.press("8")  # no flow for 8
    heard = await test_caller.wait_event(ChannelDtmfReceived, call.local_id, since=since)
    assert heard.digit == "8"
    call_id = await opened(ami_daemon)
    press = await ami_daemon.watch.event(call_id, "key_press", leg="buyer", digit="8")
    assert press.detail["matched"] is False and press.detail["passed_on"] is False
    await call.hangup()
    await ami_daemon.watch.event(call_id, "call_ended")


async def test_presses_after_the_ami_connection_was_cut(daemon_factory: Any, asterisk: Any,
                                                       test_caller: Any) -> None:
    proxy = TcpProxy("127.0.0.1", asterisk.ami_port)
    await proxy.start()
    try:
        running: RunningDaemon = await daemon_factory(ami=True, ami_port=proxy.port)
        await running.load(CATALOG)
        call, phone = await dial_call(test_caller, "5551240008")
        await call.press("0")
        call_id = await opened(running)
        await running.watch.event(call_id, "tokens_set", source="flow")
        proxy.cut()
        await proxy.wait_connections(2)
        assert running.daemon.ami is not None
        await running.daemon.ami.wait_connected(10)
        # the call was kept through the cut: the token still counts
        await sale_ends_one_log(running, call, phone, call_id)
    finally:
        await proxy.stop()


async def test_no_handover_context_refuses_the_move_and_keeps_the_call(
        daemon_factory: Any, test_caller: Any) -> None:
    running: RunningDaemon = await daemon_factory(ami=True, ami_handover="no-such-context")
    await running.load(CATALOG)
    calls = running.daemon.ami_calls
    assert calls is not None
    call, phone = await dial_call(test_caller, "5551240009")
    assert calls.handover_missing is not None  # seen at the AMI login
    assert "caller@no-such-context, buyer@no-such-context" in calls.handover_missing
    await phone.press("7")
    call_id = await opened(running)
    refused = await running.watch.event(call_id, "key_press", leg="buyer", digit="7")
    assert refused.detail["ignored"] is True
    assert "continue routing needs the call in the Stasis app" in refused.detail["reason"]
    assert await hears(test_caller, phone.channel_id, call.local_id)  # still bridged by Dial()
    await phone.press("1")  # still an ami call
    await running.watch.event(call_id, "disposition", disposition="not_qualified")
    await call.wait_hangup(10)
    row, events = await running.stored(call_id)
    assert "moving_to_stasis" not in [e.kind for e in events]
    assert row.legs["caller"].startswith("Local/")  # an ami call's legs: channel names


async def test_calls_of_groups_without_ami_are_not_opened(daemon_factory: Any,
                                                        test_caller: Any) -> None:
    """A fastagi call's keys are AMI events too: the ami mode must not log them a second
    time, nor open the call at all."""
    running: RunningDaemon = await daemon_factory(ami=True)
    await running.load(CATALOG.replace("modes: [ami, stasis]", "modes: [stasis]")
                       .replace("modes: [ami]", "modes: [fastagi]"))
    calls = running.daemon.ami_calls
    assert calls is not None
    call, phone = await dial_call(test_caller, "5551240010")
    since = test_caller.mark()
    await call.press("0")
    await phone.press("1")
    await test_caller.wait_event(ChannelDtmfReceived, call.local_id, since=since)
    await call.hangup()
    await phone.wait_hangup(10)

    async def forgotten() -> bool:  # its AMI Hangup events came after its DTMFEnd ones
        return calls.tracker.calls == 0

    await until(forgotten, 10, "the call's channels hung up, as AMI tells")
    await calls.idle(5)
    assert not [o for o in running.watch.ops if isinstance(o, CallOpened)]
    assert calls.active_calls == 0
