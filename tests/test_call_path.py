"""The core call path on the real Asterisk: prompt, key press, match, disposition, call log.

Calls enter through the shipped dialplan (`keypress-inbound`, which does Stasis(keypress));
the test holds the other half of a Local channel in its own app and presses keys on it.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.daemon import RunningDaemon

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]

CATALOG = """
flow_groups:
  - name: press-one
    redirect_no_key_press: true
    max_attempts: 2
    flows:
      - key: "1"
        name: interested-ca
        filters: [{token: caller_state, op: "==", value: CA}]
        extra_tokens: {interested: "yes"}
        continue_routing: true
      - key: "1"
        name: interested-elsewhere
        extra_tokens: {interested: "maybe"}
        continue_routing: true
      - key: "2"
        disposition: not_interested
      - key: no_key_press
        disposition: no_response
  - name: no-redirect
    redirect_no_key_press: false
    flows:
      - key: "2"
        disposition: not_interested
routers:
  - {name: main, prompt: "sound:beep", press_1_timeout: 1, flow_group: press-one,
     buyers: [auto]}
  - {name: long-prompt, prompt: "sound:tt-monkeys", press_1_timeout: 1, flow_group: press-one}
  - {name: no-redirect, prompt: "sound:beep", press_1_timeout: 0.5, flow_group: no-redirect}
buyers:
  - {name: auto, endpoint: "Local/answer@keypress-buyers/n"}
numbers:
  - {number: "18005550100", router: main}
  - {number: "18005550101", router: long-prompt}
  - {number: "18005550102", router: no-redirect}
"""


@pytest.fixture
async def kp(daemon: RunningDaemon) -> RunningDaemon:
    await daemon.load(CATALOG)
    return daemon






async def test_press_1_matched_continues_routing(kp: RunningDaemon, test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "18005550100", caller_id="5551234",
                                variables={"KEYPRESS_TOKEN_CALLER_STATE": "CA"})
    await kp.watch.event(call_id, "prompt_started")
    await call.press("1")
    press = await kp.watch.event(call_id, "key_press")
    assert press.digit == "1"
    assert press.flow == "press-one/interested-ca"
    assert press.detail["matched"] is True and press.detail["attempt"] == 1
    routed = await kp.watch.event(call_id, "continue_routing")
    assert routed.flow == "press-one/interested-ca"
    await kp.watch.event(call_id, "bridged")  # the router's buyer answers at once
    await call.hangup()
    await kp.watch.event(call_id, "call_ended", ended_by="caller")
    row, events = await kp.stored(call_id)
    assert row.tokens["interested"] == "yes"
    assert row.tokens["caller_state"] == "CA"
    assert row.caller_number == "5551234"
    assert row.stage == "ended" and row.ended_by == "caller" and row.disposition is None
    kinds = [e.kind for e in events]
    assert kinds[:3] == ["call_started", "tokens_set", "answered"]
    assert kinds[-1] == "call_ended"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_same_key_other_call_data_picks_the_other_flow(kp: RunningDaemon,
                                                             test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "18005550100",
                                variables={"KEYPRESS_TOKEN_CALLER_STATE": "NY"})
    await kp.watch.event(call_id, "prompt_started")
    await call.press("1")
    press = await kp.watch.event(call_id, "key_press")
    assert press.flow == "press-one/interested-elsewhere"
    tokens = await kp.watch.event(call_id, "tokens_set", source="flow")
    assert tokens.detail["tokens"] == {"interested": "maybe"}


async def test_disposition_key_ends_the_call(kp: RunningDaemon, test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "18005550100")
    await kp.watch.event(call_id, "prompt_finished")  # pressed after the prompt, in the timeout
    await call.press("2")
    await call.wait_hangup(10)
    await kp.watch.event(call_id, "call_ended", ended_by="daemon")
    row, events = await kp.stored(call_id)
    assert row.disposition == "not_interested"
    assert row.ended_by == "daemon" and row.ended_at is not None
    kinds = [e.kind for e in events]
    assert kinds.index("key_press") < kinds.index("disposition") < kinds.index("hangup")
    assert next(e for e in events if e.kind == "disposition").flow == "press-one/key 2 #1"


async def test_unmatched_key_reprompts_then_takes_the_no_key_press_path(
        kp: RunningDaemon, test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "18005550100")
    await kp.watch.event(call_id, "prompt_started")
    await call.press("5")
    reprompt = await kp.watch.event(call_id, "reprompt")
    assert reprompt.detail["attempt"] == 2
    await kp.watch.event(call_id, "prompt_started", attempt=2)
    await call.press("5")
    await call.wait_hangup(10)
    row, events = await kp.stored(call_id)
    presses = [e for e in events if e.kind == "key_press"]
    assert [(p.digit, p.detail["attempt"], p.detail["matched"]) for p in presses] == [
        ("5", 1, False), ("5", 2, False)]
    assert "no flow for key 5" in presses[0].detail["reason"]
    assert any(e.kind == "no_key_press" for e in events)
    assert row.disposition == "no_response"


async def test_no_key_times_out_into_the_no_key_press_flow(kp: RunningDaemon,
                                                           test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "18005550100")
    await call.wait_hangup(15)
    row, events = await kp.stored(call_id)
    kinds = [e.kind for e in events]
    assert kinds.index("prompt_finished") < kinds.index("timeout") < kinds.index("no_key_press")
    no_press = next(e for e in events if e.kind == "no_key_press")
    assert no_press.flow == "press-one/key no_key_press #1"
    assert row.disposition == "no_response" and row.ended_by == "daemon"


async def test_no_key_without_redirect_continues_routing(kp: RunningDaemon,
                                                         test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "18005550102")
    routed = await kp.watch.event(call_id, "continue_routing")
    assert "redirect_no_key_press is off" in routed.detail["reason"]
    assert "timeout" in kp.watch.kinds(call_id)
    # This router has no buyers: routing ends the call with no_buyer_available.
    await call.wait_hangup(10)
    row, _ = await kp.stored(call_id)
    assert row.disposition == "no_buyer_available" and row.ended_by == "daemon"


async def test_key_pressed_during_the_prompt_stops_it_and_counts(kp: RunningDaemon,
                                                                 test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "18005550101")
    await kp.watch.event(call_id, "prompt_started")
    await call.press("2")
    await call.wait_hangup(10)
    row, events = await kp.stored(call_id)
    kinds = [e.kind for e in events]
    assert "prompt_stopped" in kinds
    assert kinds.index("prompt_stopped") < kinds.index("key_press")
    assert "timeout" not in kinds and "prompt_finished" not in kinds
    assert row.disposition == "not_interested"


async def test_caller_hangs_up_during_the_prompt(kp: RunningDaemon, test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "18005550101")
    await kp.watch.event(call_id, "prompt_started")
    await call.hangup()
    ended = await kp.watch.event(call_id, "call_ended")
    assert ended.detail["ended_by"] == "caller" and ended.detail["stage"] == "prompting"
    row, events = await kp.stored(call_id)
    assert row.ended_at is not None and row.stage == "ended"
    assert not [e for e in events if e.kind == "error"]
    assert kp.daemon.dispatcher is not None and kp.daemon.dispatcher.active_calls == 0


async def test_unknown_number_is_logged_and_hung_up(kp: RunningDaemon, test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "18009999999")
    await call.wait_hangup(10)
    row, events = await kp.stored(call_id)
    assert [e.kind for e in events] == ["call_started", "unknown_number", "hangup", "call_ended"]
    assert events[2].detail["cause"] == "unallocated"
    assert row.router is None and row.ended_by == "daemon"


async def test_number_from_a_stasis_argument(kp: RunningDaemon, test_caller: Any) -> None:
    call, call_id = await kp.enter(test_caller, "918005550100", context="keypress-inbound-args")
    started = await kp.watch.event(call_id, "call_started")
    assert "number=18005550100" in started.detail["args"]  # the dialplan dropped the "9"
    tokens = await kp.watch.event(call_id, "tokens_set", source="call")
    assert tokens.detail["tokens"]["source"] == "args"
    await kp.watch.event(call_id, "prompt_started")
    await call.press("2")
    await call.wait_hangup(10)
    row, _ = await kp.stored(call_id)
    assert row.number == "18005550100" and row.disposition == "not_interested"
