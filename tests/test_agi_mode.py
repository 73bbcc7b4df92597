"""The fastagi mode on the real Asterisk: a plain ``Dial()`` call (context ``keypress-dial``,
no Stasis for the call), keys run the daemon's FastAGI server through features.conf's
applicationmap, flows act through AGI, and everything lands in the same call log.

The caller's phone is the test's ``;1`` half (``Local/NUMBER@keypress-dial``); the ``;2``
half runs the dialplan and dials the test buyer ``agent`` (``keypress-test-buyers``), whose
far end the test holds as the agent's phone. A press on either phone reaches the dialled
channel as DTMF, where the feature fires.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from keypress_ari.calllog.ops import CallEvent, CallOpened, CallUpdated, Op
from tests.support.buyers import BuyerPhone, TestBuyers
from tests.support.daemon import RunningDaemon
from tests.support.prom import sample

NUMBER = "18005550177"

CATALOG = """
flow_groups:
  - name: agent-keys
    modes: [fastagi]
    flows:
      - key: "1"
        name: sale
        filters: [{token: qualified, op: "==", value: "yes"}]
        disposition: sale
      - {key: "1", name: not-qualified, disposition: not_qualified}
      - {key: "2", name: late, extra_tokens: {late: "no"}, buyer_conference_time_limit: 60}
      - key: "3"
        name: beep-agent
        call_control_actions: [{play: {media: "sound:beep", to: buyer}}]
        extra_tokens: {beeped: "yes"}
  - name: caller-keys
    modes: [stasis, fastagi]
    flows:
      - {key: "0", name: qualify, extra_tokens: {qualified: "yes"}}
      - key: "#"
        name: spam
        filters: [{token: lead, op: "==", value: spammer}]
        call_control_actions: [{block_caller: {reason: test spam}}]
        disposition: spam
routers:
  - {name: dial-router, request_key_press: false, buyers: [acme]}
buyers:
  - {name: acme, endpoint: "Local/agent@keypress-test-buyers/n",
     forwards_to_external_agent: true, flow_group: agent-keys}
numbers:
  - {number: "@NUMBER@", router: dial-router, keypress_controls: true,
     flow_group: caller-keys}
""".replace("@NUMBER@", NUMBER)


@pytest.fixture
async def agi_daemon(daemon_factory: Any) -> RunningDaemon:
    running: RunningDaemon = await daemon_factory(agi=True)
    await running.load(CATALOG)
    return running


async def dial_call(test_caller: Any, running: RunningDaemon, *,
                    caller_id: str = "5551230001",
                    variables: dict[str, str] | None = None) -> tuple[Any, BuyerPhone]:
    """Place the Dial() call and answer as the agent: (the caller's phone, the agent's)."""
    placing = asyncio.create_task(test_caller.place_call(
        NUMBER, context="keypress-dial", caller_id=caller_id, variables=variables))
    phone = await TestBuyers.of(test_caller).next_leg("agent")
    await phone.answer()
    call = await placing
    assert call.answered
    return call, phone


async def opened(running: RunningDaemon, timeout: float = 10.0) -> CallOpened:
    op = await running.watch.wait_for(
        lambda o: isinstance(o, CallOpened) and o.number == NUMBER, timeout)
    assert isinstance(op, CallOpened)
    return op


def _press_rows(running: RunningDaemon, call_id: str) -> list[CallEvent]:
    return [e for e in running.watch.events(call_id) if e.kind == "key_press"]


async def test_agent_press_ends_the_call_with_its_disposition(
        agi_daemon: RunningDaemon, test_caller: Any) -> None:
    call, phone = await dial_call(test_caller, agi_daemon)
    await phone.press("1")
    call_id = (await opened(agi_daemon)).call_id
    press = await agi_daemon.watch.event(call_id, "key_press", leg="buyer", digit="1")
    assert press.detail["matched"] is True and press.flow == "agent-keys/not-qualified"
    assert press.detail["mode"] == "fastagi"
    done = await agi_daemon.watch.event(call_id, "disposition", disposition="not_qualified")
    assert done.detail["mode"] == "fastagi"
    assert sample(agi_daemon.daemon.metrics.render(), "keypress_key_presses_total",
                  mode="fastagi", group="agent-keys", flow="not-qualified",
                  outcome="matched") == 1
    # both legs hung up by the daemon through AGI
    await call.wait_hangup(10)
    await phone.wait_hangup(10)
    row, events = await agi_daemon.stored(call_id)
    assert row.disposition == "not_qualified" and row.ended_by == "daemon"
    kinds = [e.kind for e in events]
    assert kinds[0] == "call_started" and kinds[-1] == "call_ended"
    started = events[0].detail
    assert started["mode"] == "fastagi" and started["buyer"] == "acme"
    # U(keypress-answered) set KEYPRESS_ANSWERED_AT on the caller: the conference start
    assert started["conference_from"] == "KEYPRESS_ANSWERED_AT"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_caller_token_steers_the_agent_key(agi_daemon: RunningDaemon,
                                                 test_caller: Any) -> None:
    """The caller's key sets a token; the agent's same key then matches the filtered flow."""
    call, phone = await dial_call(test_caller, agi_daemon)
    await call.press("0")
    call_id = (await opened(agi_daemon)).call_id
    await agi_daemon.watch.event(call_id, "tokens_set", source="flow")
    # the token is on the caller's channel too, for the dialplan after Dial()
    value = await test_caller.client.get_variable(call.remote_id, "KEYPRESS_TOKEN_QUALIFIED")
    assert value == "yes"
    await phone.press("1")
    press = await agi_daemon.watch.event(call_id, "key_press", leg="buyer", digit="1")
    assert press.flow == "agent-keys/sale"
    await agi_daemon.watch.event(call_id, "disposition", disposition="sale")
    await call.wait_hangup(10)
    caller_press = [p for p in _press_rows(agi_daemon, call_id) if p.leg == "caller"]
    assert [p.flow for p in caller_press] == ["caller-keys/qualify"]


async def test_filters_on_channel_tokens_and_block_caller(agi_daemon: RunningDaemon,
                                                          test_caller: Any) -> None:
    call, _phone = await dial_call(test_caller, agi_daemon, caller_id="5559990002",
                                   variables={"KEYPRESS_TOKEN_LEAD": "spammer"})
    await call.press("#")
    call_id = (await opened(agi_daemon)).call_id
    started = await agi_daemon.watch.event(call_id, "tokens_set", source="call")
    assert started.detail["tokens"] == {"lead": "spammer"}
    action = await agi_daemon.watch.event(call_id, "call_control_action",
                                          action="block_caller")
    assert action.detail["outcome"] == "ok"
    await agi_daemon.watch.event(call_id, "disposition", disposition="spam")
    await call.wait_hangup(10)
    assert "5559990002" in agi_daemon.daemon.blocklist


async def test_unmatched_key_and_time_limit_leave_the_call_up(
        agi_daemon: RunningDaemon, test_caller: Any) -> None:
    call, phone = await dial_call(test_caller, agi_daemon, caller_id="5551230003")
    await call.press("9")  # in the caller's features, in no flow
    call_id = (await opened(agi_daemon)).call_id
    miss = await agi_daemon.watch.event(call_id, "key_press", digit="9")
    assert miss.detail["matched"] is False and "9" in miss.detail["reason"]
    core = agi_daemon.daemon.core
    assert core is not None
    core.ctx.clock = lambda: time.time() + 120  # two minutes into the conference
    await phone.press("2")
    late = await agi_daemon.watch.event(call_id, "key_press", digit="2")
    assert late.detail["ignored"] is True and "60" in late.detail["reason"]
    assert not any(e.kind == "tokens_set" and e.detail.get("source") == "flow"
                   for e in agi_daemon.watch.events(call_id))
    calls = agi_daemon.daemon.agi_calls
    assert calls is not None and calls.active_calls == 1
    await call.hangup()
    await phone.wait_hangup(10)


async def test_play_to_the_pressing_agent_then_the_call_goes_on(
        agi_daemon: RunningDaemon, test_caller: Any) -> None:
    call, phone = await dial_call(test_caller, agi_daemon, caller_id="5551230004")
    await phone.press("3")
    call_id = (await opened(agi_daemon)).call_id
    action = await agi_daemon.watch.event(call_id, "call_control_action", action="play")
    assert action.detail["outcome"] == "ok", action.detail
    await agi_daemon.watch.event(call_id, "tokens_set", source="flow")
    # the AGI returned: the agent is back in the bridge and a second key still works
    await phone.press("1")
    await agi_daemon.watch.event(call_id, "disposition", disposition="not_qualified")
    await call.wait_hangup(10)


async def test_sweep_closes_a_call_whose_channels_left(agi_daemon: RunningDaemon,
                                                       test_caller: Any) -> None:
    """FastAGI sees no hangup: the sweep (ARI lists every channel) closes the call."""
    call, phone = await dial_call(test_caller, agi_daemon, caller_id="5551230005")
    await call.press("0")
    call_id = (await opened(agi_daemon)).call_id
    await agi_daemon.watch.event(call_id, "tokens_set", source="flow")
    await call.hangup()
    await phone.wait_hangup(10)
    calls = agi_daemon.daemon.agi_calls
    core = agi_daemon.daemon.core
    assert calls is not None and core is not None
    names = {c.name for c in await core.ari.list_channels()}
    assert calls.sweep(names) == 1 and calls.active_calls == 0

    def closed(o: Op) -> bool:
        return isinstance(o, CallUpdated) and o.call_id == call_id and o.ended_at is not None
    await agi_daemon.watch.wait_for(closed)
    row, _ = await agi_daemon.stored(call_id)
    assert row.ended_by == "unknown" and "gone" in (row.end_reason or "")


async def test_listed_keys_are_swallowed_unlisted_keys_pass(
        agi_daemon: RunningDaemon, test_caller: Any) -> None:
    """The agent's key 3 (in the buyer's features) never reaches the caller; key 9 (not in
    them) does, as plain DTMF."""
    from keypress_ari.ari.events import ChannelDtmfReceived

    call, phone = await dial_call(test_caller, agi_daemon, caller_id="5551230006")
    since = test_caller.mark()
    await phone.press("3")
    call_id = (await opened(agi_daemon)).call_id
    await agi_daemon.watch.event(call_id, "call_control_action", action="play")
    await phone.press("9")
    heard = await test_caller.wait_for(
        lambda e: isinstance(e, ChannelDtmfReceived) and e.channel.id == call.local_id,
        timeout=10, since=since)
    assert isinstance(heard, ChannelDtmfReceived) and heard.digit == "9"
    digits = [e.digit for e in test_caller.events[since:]
              if isinstance(e, ChannelDtmfReceived) and e.channel.id == call.local_id]
    assert digits == ["9"]  # the 3 went to the daemon only
    await call.hangup()
    await phone.wait_hangup(10)


async def test_a_restarted_daemon_carries_on_with_its_fastagi_calls(
        daemon_factory: Any, test_caller: Any) -> None:
    first: RunningDaemon = await daemon_factory(agi=True)
    await first.load(CATALOG)
    call, phone = await dial_call(test_caller, first, caller_id="5551230007")
    await call.press("0")
    call_id = (await opened(first)).call_id
    await first.watch.event(call_id, "tokens_set", source="flow")
    await first.daemon.stop()
    second: RunningDaemon = await daemon_factory(agi=True)
    calls = second.daemon.agi_calls
    assert calls is not None and calls.active_calls == 1  # adopted from its snapshot
    await phone.press("1")  # the token set before the restart still steers the match
    press = await second.watch.event(call_id, "key_press", leg="buyer", digit="1")
    assert press.flow == "agent-keys/sale"
    await call.wait_hangup(10)
    _, events = await second.stored(call_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # no gap, no repeat
    assert sum(e.kind == "call_started" for e in events) == 1
