"""The rules of key presses, once: plain functions over the catalog and the call's data.

A real call (``calls.prompting``, ``calls.live``, ``calls.dialing``, ``calls.flow_runner``)
and the dry run (``simulate``) both decide through these, so the dry run cannot drift from
what a call does. No I/O and no clock: times come in as arguments.

* which flow group listens on a leg in a phase (:func:`prompt_group`, :func:`live_group`);
* whether a leg's digits are kept from the other party, and whether an unused one is passed
  on (:func:`absorbs_digits`, :func:`passes_unused_digit_on`);
* a press at the router prompt or a timeout (:func:`decide_press`,
  :func:`decide_no_key_press`);
* the buyer conference time limit (:func:`time_limit`);
* why flows for the key did not match (:func:`explain_misses`);
* what carrying out a matched flow does, in order (:func:`plan_flow`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from keypress_ari.flows.filters import describe, explain, filter_matches
from keypress_ari.flows.match import Matched, NoMatch, match
from keypress_ari.flows.model import Buyer, CallControlAction, Flow, FlowGroup, Number, Router
from keypress_ari.flows.syntax import NO_KEY_PRESS

Leg = Literal["caller", "buyer"]
# Where a press lands: the router's key press stage, or a call past it (routing, bridged).
PressPhase = Literal["prompt", "live"]


# ---- who listens ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listening:
    """The flow group that matches presses on a leg (None: no key press flows), and why."""

    group: str | None
    reason: str


def prompt_group(router: Router | None) -> Listening:
    """The caller at the router prompt: the router's group, if it requests a key press."""
    if router is None or not router.request_key_press:
        name = router.name if router is not None else None
        return Listening(None, f"router {name} does not request a key press")
    return Listening(router.flow_group, f"router {router.name}'s prompt")


def live_group(leg: Leg, number: Number | None, buyer: Buyer | None) -> Listening:
    """Past the router prompt: the caller's leg listens with the number's group when it has
    ``keypress_controls``; the buyer's leg with the buyer's group when the buyer
    ``forwards_to_external_agent``."""
    if leg == "caller":
        if number is None or not number.keypress_controls:
            shown = number.number if number is not None else "-"
            return Listening(None, f"number {shown} has no keypress_controls")
        return Listening(number.flow_group, f"number {number.number}'s keypress_controls")
    if buyer is None:
        return Listening(None, "no buyer on the call")
    if not buyer.forwards_to_external_agent:
        return Listening(None, f"buyer {buyer.name} does not forward to an external agent")
    return Listening(buyer.flow_group, f"buyer {buyer.name}'s group")


def absorbs_digits(group: FlowGroup | None) -> bool:
    """Whether a leg's digits are kept from the other party (the bridge absorbs them): when
    key press flows listen on the leg and their group does not pass digits through."""
    return group is not None and not group.pass_through_digits


def passes_unused_digit_on(group: FlowGroup, *, bridged: bool) -> bool:
    """An absorbed digit no flow used is sent on to the other party, once they are bridged."""
    return bridged and absorbs_digits(group)


# ---- the router prompt ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunFlow:
    """Carry out a matched flow."""

    matched: Matched
    reason: str
    no_key_press: bool = False  # reached through the no-key-press path


@dataclass(frozen=True, slots=True)
class Reprompt:
    """No flow matched and attempts remain: play the prompt again."""

    attempt: int
    no_match: NoMatch


@dataclass(frozen=True, slots=True)
class ContinueRouting:
    """No usable key press and no no_key_press flow ran: route the call to a buyer."""

    reason: str


Decision = RunFlow | Reprompt | ContinueRouting


def decide_press(
    group: FlowGroup, key: str, data: Mapping[str, str], attempts: int
) -> tuple[Matched | NoMatch, Decision]:
    """A key pressed at the router prompt, after ``attempts`` prompts were played.

    ``max_attempts`` is how many presses the caller gets: after that many unmatched presses
    the call takes the no-key-press path.
    """
    result = match(group, key, data)
    if isinstance(result, Matched):
        return result, RunFlow(result, "key press")
    if attempts < group.max_attempts:
        return result, Reprompt(attempts + 1, result)
    return result, decide_no_key_press(group, data, f"{attempts} presses matched no flow")


def decide_no_key_press(group: FlowGroup, data: Mapping[str, str], reason: str) -> Decision:
    """Nothing (usable) was pressed: run the ``no_key_press`` flow or continue routing."""
    if not group.redirect_no_key_press:
        return ContinueRouting(f"{reason}; redirect_no_key_press is off")
    result = match(group, NO_KEY_PRESS, data)
    if isinstance(result, Matched):
        return RunFlow(result, reason, no_key_press=True)
    return ContinueRouting(f"{reason}; {result.reason}")


# ---- the buyer conference time limit ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimeLimit:
    limit: int
    buyer_seconds: float | None
    ignored: bool
    verdict: str


def time_limit(flow: Flow, phase: PressPhase, buyer_seconds: float | None) -> TimeLimit | None:
    """A matched flow's ``buyer_conference_time_limit`` against the buyer's time in the
    conference (None: not in it yet). None when the flow has no limit."""
    limit = flow.buyer_conference_time_limit
    if limit is None:
        return None
    if phase == "prompt":
        return TimeLimit(limit, buyer_seconds, False,
                         f"limit {limit}s does not apply at the router prompt (no buyer yet)")
    if buyer_seconds is None:
        return TimeLimit(limit, None, False,
                         f"limit {limit}s not checked: the buyer is not in the conference")
    if buyer_seconds >= limit:
        return TimeLimit(limit, buyer_seconds, True,
                         f"buyer in conference {buyer_seconds:.1f}s, limit {limit}s: "
                         "the key press is ignored")
    return TimeLimit(limit, buyer_seconds, False,
                     f"buyer in conference {buyer_seconds:.1f}s, within the limit of {limit}s")


# ---- why the others did not match ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlowMiss:
    """A flow for the key that did not match: its first failing filter and why."""

    flow: str  # group/label
    position: int
    filter: str
    why: str


def explain_misses(group: FlowGroup, key: str, result: Matched | NoMatch,
                   data: Mapping[str, str]) -> list[FlowMiss]:
    """Every flow for ``key`` tried before the outcome and the filter that failed it."""
    if isinstance(result, NoMatch):
        return [FlowMiss(f"{group.name}/{m.label}", m.position, describe(m.filter), m.why)
                for m in result.misses]
    out: list[FlowMiss] = []
    for position, flow in group.flows_for(key):
        if position >= result.position:
            break
        failing = next(f for f in flow.filters if not filter_matches(f, data))
        out.append(FlowMiss(f"{group.name}/{group.label(position)}", position,
                            describe(failing), explain(failing, data)))
    return out


# ---- what a flow does --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlowPlan:
    """Carrying out a flow, in order: its webhooks are queued, its tokens set, its call
    control actions run up to a ``hangup`` (those after it never run), then the call ends
    (disposition or hangup), routing continues, or the call carries on."""

    tokens: Mapping[str, str]
    controls: tuple[CallControlAction, ...]  # run in order; never a hangup
    hangup: bool
    not_run: tuple[CallControlAction, ...]  # after the hangup
    disposition: str | None
    continue_routing: bool
    then: str

    @property
    def ends_call(self) -> bool:
        return bool(self.disposition) or self.hangup


def plan_flow(flow: Flow, phase: PressPhase) -> FlowPlan:
    controls: list[CallControlAction] = []
    hangup_at: int | None = None
    for i, action in enumerate(flow.call_control_actions):
        if action.kind == "hangup":
            hangup_at = i
            break
        controls.append(action)
    not_run = tuple(flow.call_control_actions[hangup_at + 1:]) if hangup_at is not None else ()
    if flow.disposition:
        then = f"the call ends with disposition {flow.disposition}"
    elif hangup_at is not None:
        then = "the call is hung up"
    elif flow.continue_routing:
        then = "routing continues: live buyer legs dropped, the next buyer dialled"
    elif phase == "prompt":
        then = "the key press stage ends: routing continues"
    else:
        then = "the call carries on"
    return FlowPlan(dict(flow.extra_tokens), tuple(controls), hangup_at is not None,
                    tuple(not_run), flow.disposition, flow.continue_routing, then)
