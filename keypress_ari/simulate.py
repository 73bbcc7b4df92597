"""Dry run of one key press against a catalog: which flow would match, why the others did not,
and what would run. Pure: no I/O, no clock, nothing is touched.

The rules are the daemon's own, from :mod:`keypress_ari.calls.rules` (a test runs the same
scenarios through a real call and through this, and compares):

* the caller at the router prompt (stage ``prompt``) is matched against the router's flow
  group; an unmatched press re-prompts until ``max_attempts``, then the no-key-press path runs;
* the caller on a live call (stage ``live``) against the number's group when the number has
  ``keypress_controls``;
* the buyer's leg (always ``live``) against the buyer's group when the buyer
  ``forwards_to_external_agent``.

The stage is inferred when not given: ``prompt`` for the caller when no buyer is named, no
``buyer_seconds`` is given and the router requests a key press; ``live`` otherwise.

``mode`` is the call mode the press comes in by (``stasis``, ``fastagi``, ``ami``): a group
that does not list it does not listen; an unused digit reaches the other party or not as
that mode does; an ami call whose flow needs the Stasis app (hold, play, continue routing)
is moved there first.

Filters see the call data a real call has (``caller_number``, ``caller_name``,
``dialled_number``, ``number``, ``router``; ``buyer`` once a buyer is dialled), then the given
tokens (which may override call data, as channel tokens do).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from keypress_ari.calls.handover import needs_stasis
from keypress_ari.calls.rules import (
    ContinueRouting,
    FlowMiss,
    FlowPlan,
    Leg,
    PressPhase,
    Reprompt,
    RunFlow,
    TimeLimit,
    decide_no_key_press,
    decide_press,
    explain_misses,
    live_group,
    passes_unused_digit_on,
    plan_flow,
    prompt_group,
    time_limit,
)
from keypress_ari.flows.match import Matched, NoMatch, match
from keypress_ari.flows.model import CallControlAction, Catalog, Flow, FlowGroup
from keypress_ari.flows.modes import MODES
from keypress_ari.flows.syntax import KEYS, NO_KEY_PRESS

__all__ = ["FlowMiss", "SimulationResult", "TimeLimit", "WouldRun", "simulate"]

# outcome values
MATCHED, NO_MATCH, IGNORED, NO_FLOWS, INVALID = (
    "matched", "no_match", "ignored", "no_flows", "invalid",
)


@dataclass(slots=True)
class WouldRun:
    tokens: dict[str, str] = field(default_factory=dict)
    call_control_actions: list[dict[str, Any]] = field(default_factory=list)
    not_run: list[dict[str, Any]] = field(default_factory=list)  # after a hangup
    disposition: str | None = None
    continue_routing: bool = False
    ends_call: bool = False
    webhook_actions: list[Any] = field(default_factory=list)
    then: str = ""  # what the call does next, in words


@dataclass(slots=True)
class SimulationResult:
    number: str
    digit: str
    leg: str
    stage: str
    mode: str = "stasis"
    outcome: str = NO_FLOWS
    reason: str = ""
    router: str | None = None
    buyer: str | None = None
    group: str | None = None
    group_reason: str = ""
    call_data: dict[str, str] = field(default_factory=dict)
    matched: str | None = None
    matched_position: int | None = None
    misses: list[FlowMiss] = field(default_factory=list)
    time_limit: TimeLimit | None = None
    would_run: WouldRun | None = None
    moves_to_stasis: str | None = None  # ami: what needs the call moved into the Stasis app

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (``json.dumps`` works on it as is)."""
        return asdict(self)

    def render(self) -> str:
        """A human-readable account, for the CLI."""
        lines = [f"number {self.number}  digit {self.digit}  leg {self.leg}  stage {self.stage}"
                 f"  mode {self.mode}"]
        if self.router or self.buyer:
            lines.append(f"router {self.router or '-'}  buyer {self.buyer or '-'}")
        if self.group_reason:
            lines.append(f"flow group: {self.group or '-'} ({self.group_reason})")
        if self.call_data:
            shown = ", ".join(f"{k}={v!r}" for k, v in sorted(self.call_data.items()))
            lines.append(f"call data: {shown}")
        for miss in self.misses:
            lines.append(f"  not matched: {miss.flow}: {miss.filter} ({miss.why})")
        if self.matched:
            lines.append(f"  matched: {self.matched}")
        if self.time_limit is not None:
            lines.append(f"conference time limit: {self.time_limit.verdict}")
        lines.append(f"outcome: {self.outcome}" + (f": {self.reason}" if self.reason else ""))
        if self.would_run is not None:
            lines.extend(_render_run(self.would_run))
        return "\n".join(lines)


def _render_run(run: WouldRun) -> list[str]:
    lines = ["would run:"]
    if run.tokens:
        lines.append("  set tokens " + ", ".join(f"{k}={v}" for k, v in sorted(run.tokens.items())))
    for action in run.call_control_actions:
        lines.append("  action " + _action_text(action))
    for action in run.not_run:
        lines.append("  (not run, after hangup) " + _action_text(action))
    for hook in run.webhook_actions:
        lines.append(f"  webhook {hook}")
    if run.disposition:
        lines.append(f"  disposition {run.disposition}")
    if run.then:
        lines.append(f"  then: {run.then}")
    return lines


def _action_text(action: Mapping[str, Any]) -> str:
    params = " ".join(f"{k}={v}" for k, v in action.items() if k != "action")
    return f"{action['action']} {params}".rstrip()


def call_data(
    *, number: str, router: str | None, buyer: str | None, tokens: Mapping[str, str]
) -> dict[str, str]:
    """What filters would see, built the way a call builds it."""
    data = {"caller_number": "", "caller_name": "", "dialled_number": number, "number": number}
    if router is not None:
        data["router"] = router
    data.update(tokens)
    if buyer is not None:
        data["buyer"] = buyer
    return data


def _action_dict(action: CallControlAction) -> dict[str, Any]:
    params = {k: v for k, v in (("media", action.media), ("to", action.to),
                                ("reason", action.reason)) if v is not None}
    if action.kind != "play":
        params.pop("to", None)
    return {"action": action.kind, **params}


def would_run(flow: Flow, phase: PressPhase) -> WouldRun:
    """What carrying out ``flow`` does: the flow runner's plan (``calls.rules.plan_flow``)."""
    plan: FlowPlan = plan_flow(flow, phase)
    run = [_action_dict(a) for a in plan.controls]
    if plan.hangup:
        run.append({"action": "hangup"})
    return WouldRun(tokens=dict(plan.tokens), call_control_actions=run,
                    not_run=[_action_dict(a) for a in plan.not_run],
                    disposition=plan.disposition, continue_routing=plan.continue_routing,
                    ends_call=plan.ends_call,
                    webhook_actions=[a.model_dump(mode="json") for a in flow.actions],
                    then=plan.then)


def _pick_group(catalog: Catalog, res: SimulationResult, phase: PressPhase) -> FlowGroup | None:
    """Which group listens (the rules'); sets ``group`` / ``group_reason`` / ``reason``."""
    if res.leg == "buyer":
        buyer = catalog.buyer(res.buyer) if res.buyer else None
        if buyer is None:
            res.reason = "the buyer leg needs a known buyer" if res.buyer is None else (
                f"unknown buyer {res.buyer!r}")
            res.outcome = INVALID
            return None
        listening = live_group("buyer", None, buyer)
    elif phase == "prompt":
        listening = prompt_group(catalog.router(res.router) if res.router else None)
    else:
        listening = live_group("caller", catalog.number(res.number), None)
    res.group, res.group_reason = listening.group, listening.reason
    if listening.group is None:
        return None
    group = catalog.flow_group(listening.group)
    if group is None:
        res.outcome, res.reason = INVALID, f"flow group {res.group!r} is not in the catalog"
    return group


def simulate(
    catalog: Catalog,
    *,
    number: str,
    digit: str,
    leg: Leg = "caller",
    buyer: str | None = None,
    tokens: Mapping[str, str] | None = None,
    buyer_seconds: float | None = None,
    stage: PressPhase | None = None,
    mode: str = "stasis",
) -> SimulationResult:
    """What pressing ``digit`` on ``leg`` of a call to ``number`` would do."""
    if leg == "buyer":
        stage = "live"
    num = catalog.number(number)
    router = catalog.router(num.router) if num else None
    if stage is None:
        live = buyer is not None or buyer_seconds is not None
        stage = "prompt" if not live and router is not None and router.request_key_press \
            else "live"
    if mode != "stasis" and leg == "caller" and stage == "prompt":
        stage = "live"  # only the stasis mode has a router prompt
    res = SimulationResult(number=number, digit=digit, leg=leg, stage=stage, mode=mode,
                           router=router.name if router else None, buyer=buyer)
    if mode not in MODES:
        res.outcome, res.reason = INVALID, f"mode must be one of {', '.join(MODES)}"
        return res
    if leg not in ("caller", "buyer"):
        res.outcome, res.reason = INVALID, f"leg must be caller or buyer, got {leg!r}"
        return res
    if digit not in KEYS:
        res.outcome, res.reason = INVALID, f"digit must be 0-9, *, # or {NO_KEY_PRESS}"
        return res
    if num is None or router is None:
        res.outcome, res.reason = INVALID, f"unknown number {number!r}: the call is refused"
        return res
    if buyer is not None and catalog.buyer(buyer) is None:
        res.outcome, res.reason = INVALID, f"unknown buyer {buyer!r}"
        return res
    res.call_data = call_data(number=number, router=router.name, buyer=buyer,
                              tokens=tokens or {})
    group = _pick_group(catalog, res, stage)
    if group is None:
        if res.outcome != INVALID:
            res.reason = f"no key press flows on the {leg} leg"
        return res
    if mode not in group.modes:
        res.reason = (f"flow group {group.name} does not list {mode} in its modes: "
                      f"its flows do not run on {mode} calls")
        return res
    if stage == "prompt":
        _at_prompt(res, group)
        return res
    result = match(group, digit, res.call_data)
    res.misses = explain_misses(group, digit, result, res.call_data)
    if isinstance(result, NoMatch):
        res.outcome = NO_MATCH
        res.reason = f"{result.reason}; {_unused_digit(group, digit, mode)}"
        return res
    _matched(res, group, result, "live", buyer_seconds)
    moved = needs_stasis(result.flow) if mode == "ami" else None
    if moved is not None and res.would_run is not None:
        res.moves_to_stasis = moved
        first = (f"the call is moved into the Stasis app first ({moved}: AMI Redirect of "
                 "both legs), which then carries it")
        then = res.would_run.then
        res.would_run.then = f"{first}; {then}" if then else first
    return res


def _unused_digit(group: FlowGroup, digit: str, mode: str) -> str:
    """What becomes of a digit no flow took, in ``mode``."""
    if mode == "ami":
        return "the digit reaches the other party (AMI only watches)"
    if mode == "fastagi":
        if any(f.key == digit for f in group.flows):
            return "the key is in the applicationmap: it does not reach the other party"
        return "the key is not in the applicationmap: it reaches the other party"
    if passes_unused_digit_on(group, bridged=True):
        return "on a bridged call the digit is passed on"
    return "the digit already reaches the other party"


def _at_prompt(res: SimulationResult, group: FlowGroup) -> None:
    """The router prompt: a press (first attempt) or nothing pressed, as the call decides."""
    data = res.call_data
    if res.digit == NO_KEY_PRESS:
        decision = decide_no_key_press(group, data, "no key pressed")
        explained = match(group, NO_KEY_PRESS, data)
    else:
        explained, decision = decide_press(group, res.digit, data, attempts=1)
    res.misses = explain_misses(group, res.digit, explained, data)
    if isinstance(decision, RunFlow) and not decision.no_key_press:
        _matched(res, group, decision.matched, "prompt", None)
        return
    res.outcome = NO_MATCH
    if isinstance(decision, Reprompt):
        res.reason = (f"{decision.no_match.reason}; the caller is prompted again (up to "
                      f"{group.max_attempts} presses), then the no-key-press path runs")
    elif isinstance(decision, ContinueRouting):
        res.reason = f"{decision.reason}: routing continues"
    elif res.digit == NO_KEY_PRESS:  # nothing pressed: the no_key_press flow runs
        res.reason = f"{decision.reason}; the no-key-press path runs"
        _matched(res, group, decision.matched, "prompt", None)
    else:  # the press matched nothing and was the last attempt: the no_key_press flow runs
        res.reason = (f"{decision.reason}; the no-key-press path runs "
                      f"({group.name}/{decision.matched.label})")
        res.would_run = would_run(decision.matched.flow, "prompt")


def _matched(res: SimulationResult, group: FlowGroup, result: Matched, phase: PressPhase,
             buyer_seconds: float | None) -> None:
    res.matched = f"{group.name}/{result.label}"
    res.matched_position = result.position
    res.time_limit = time_limit(result.flow, phase, buyer_seconds)
    if res.time_limit is not None and res.time_limit.ignored:
        res.outcome, res.reason = IGNORED, res.time_limit.verdict
        return
    res.outcome = MATCHED
    res.would_run = would_run(result.flow, phase)
