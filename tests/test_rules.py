"""The key press rules (calls.rules), as plain functions over plain data (no I/O)."""

from __future__ import annotations

from keypress_ari.calls.rules import (
    ContinueRouting,
    Reprompt,
    RunFlow,
    decide_no_key_press,
    decide_press,
)
from keypress_ari.calls.state import CallState, Stage, parse_stasis_args
from keypress_ari.flows.match import Matched, NoMatch
from keypress_ari.flows.model import Filter, Flow, FlowGroup


def group(*, redirect: bool = True, max_attempts: int = 3, no_key_press: bool = True) -> FlowGroup:
    flows = [
        Flow(key="1", name="ca", filters=(Filter(token="caller_state", op="==", value="CA"),),
             continue_routing=True),
        Flow(key="2", disposition="not_interested"),
    ]
    if no_key_press:
        flows.append(Flow(key="no_key_press", disposition="no_response"))
    return FlowGroup(name="g", redirect_no_key_press=redirect, max_attempts=max_attempts,
                     flows=tuple(flows))


def test_a_matching_press_runs_its_flow() -> None:
    result, decision = decide_press(group(), "1", {"caller_state": "CA"}, attempts=1)
    assert isinstance(result, Matched)
    assert isinstance(decision, RunFlow)
    assert decision.matched.flow.name == "ca" and decision.no_key_press is False


def test_an_unmatched_press_reprompts_while_attempts_remain() -> None:
    result, decision = decide_press(group(max_attempts=3), "1", {"caller_state": "NY"}, 2)
    assert isinstance(result, NoMatch)
    assert isinstance(decision, Reprompt) and decision.attempt == 3


def test_the_last_unmatched_press_takes_the_no_key_press_flow() -> None:
    _, decision = decide_press(group(max_attempts=3), "7", {}, attempts=3)
    assert isinstance(decision, RunFlow)
    assert decision.no_key_press is True
    assert decision.matched.flow.disposition == "no_response"
    assert "3 presses matched no flow" in decision.reason


def test_no_key_press_with_redirect_off_continues_routing() -> None:
    decision = decide_no_key_press(group(redirect=False), {}, "no key pressed")
    assert isinstance(decision, ContinueRouting)
    assert decision.reason == "no key pressed; redirect_no_key_press is off"


def test_redirect_without_a_no_key_press_flow_continues_routing() -> None:
    decision = decide_no_key_press(group(no_key_press=False), {}, "no key pressed")
    assert isinstance(decision, ContinueRouting)
    assert decision.reason.startswith("no key pressed; ")


def test_call_state_round_trips_through_its_snapshot() -> None:
    st = CallState(call_id="c1", channel_id="ch1", number="100", router="main")
    st.set_tokens({"a": "b"})
    st.move(Stage.WAITING)
    st.next_seq()
    again = CallState.from_snapshot(st.snapshot())
    assert again.snapshot() == st.snapshot()
    assert again.stage is Stage.WAITING and again.data["a"] == "b"


def test_stasis_arguments() -> None:
    assert parse_stasis_args(["number=100", "source = args", "bare", "=x", "k="]) == {
        "number": "100", "source": "args", "k": ""}
