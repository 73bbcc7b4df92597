"""Dry run of one key press against a catalog: which flow would match, why the others did not,
and what would run. Pure: no I/O, no clock, nothing is touched.

The rules are the daemon's (``calls.prompting``, ``calls.live``, ``calls.decide``):

* the caller at the router prompt (stage ``prompt``) is matched against the router's flow
  group; an unmatched press re-prompts until ``max_attempts``, then the no-key-press path runs;
* the caller on a live call (stage ``live``) against the number's group when the number has
  ``keypress_controls``;
* the buyer's leg (always ``live``) against the buyer's group when the buyer
  ``forwards_to_external_agent``.

The stage is inferred when not given: ``prompt`` for the caller when no buyer is named, no
``buyer_seconds`` is given and the router requests a key press; ``live`` otherwise.

Filters see the call data a real call has (``caller_number``, ``caller_name``,
``dialled_number``, ``number``, ``router``; ``buyer`` once a buyer is dialled), then the given
tokens (which may override call data, as channel tokens do).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from keypress_ari.flows.filters import describe, explain, filter_matches
from keypress_ari.flows.match import Matched, NoMatch, match
from keypress_ari.flows.model import Catalog, Flow, FlowGroup
from keypress_ari.flows.syntax import KEYS, NO_KEY_PRESS

Leg = Literal["caller", "buyer"]
Stage = Literal["prompt", "live"]

# outcome values
MATCHED, NO_MATCH, IGNORED, NO_FLOWS, INVALID = (
    "matched", "no_match", "ignored", "no_flows", "invalid",
)


@dataclass(frozen=True, slots=True)
class FlowMiss:
    """A flow for the key that did not match: its first failing filter and why."""

    flow: str  # group/label
    position: int
    filter: str
    why: str


@dataclass(frozen=True, slots=True)
class TimeLimit:
    limit: int
    buyer_seconds: float | None
    ignored: bool
    verdict: str


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

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (``json.dumps`` works on it as is)."""
        return asdict(self)

    def render(self) -> str:
        """A human-readable account, for the CLI."""
        lines = [f"number {self.number}  digit {self.digit}  leg {self.leg}  stage {self.stage}"]
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


def _actions(flow: Flow) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    run: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    target = run
    for action in flow.call_control_actions:
        params = {k: v for k, v in (("media", action.media), ("to", action.to),
                                    ("reason", action.reason)) if v is not None}
        if action.kind != "play":
            params.pop("to", None)
        target.append({"action": action.kind, **params})
        if action.kind == "hangup":
            target = skipped
    return run, skipped


def _webhook_actions(flow: Flow) -> list[Any]:
    """The flow's webhook ``actions`` as stored (JSON form)."""
    return [action.model_dump(mode="json") for action in flow.actions]


def would_run(flow: Flow, stage: str) -> WouldRun:
    """What carrying out ``flow`` does (``calls.live.LiveControl.apply_flow``)."""
    run, skipped = _actions(flow)
    hangup = bool(skipped) or any(a["action"] == "hangup" for a in run)
    out = WouldRun(tokens=dict(flow.extra_tokens), call_control_actions=run, not_run=skipped,
                   disposition=flow.disposition, continue_routing=flow.continue_routing,
                   webhook_actions=_webhook_actions(flow))
    if flow.disposition:
        out.ends_call, out.then = True, f"the call ends with disposition {flow.disposition}"
    elif hangup:
        out.ends_call, out.then = True, "the call is hung up"
    elif flow.continue_routing:
        out.then = "routing continues: live buyer legs dropped, the next buyer dialled"
    elif stage == "prompt":
        out.then = "the key press stage ends: routing continues"
    else:
        out.then = "the call carries on"
    return out


def _pick_group(
    catalog: Catalog, res: SimulationResult, *, number_flow_group: str | None,
    keypress_controls: bool, stage: str,
) -> FlowGroup | None:
    """Which group applies; sets ``group`` / ``group_reason`` / ``reason`` on ``res``."""
    if res.leg == "buyer":
        buyer = catalog.buyer(res.buyer) if res.buyer else None
        if buyer is None:
            res.reason = "the buyer leg needs a known buyer" if res.buyer is None else (
                f"unknown buyer {res.buyer!r}")
            res.outcome = INVALID
            return None
        if not buyer.forwards_to_external_agent:
            res.group_reason = f"buyer {buyer.name} does not forward to an external agent"
            return None
        res.group, res.group_reason = buyer.flow_group, f"buyer {buyer.name}'s group"
    elif stage == "prompt":
        router = catalog.router(res.router) if res.router else None
        if router is None or not router.request_key_press:
            res.group_reason = f"router {res.router} does not request a key press"
            return None
        res.group, res.group_reason = router.flow_group, f"router {router.name}'s prompt"
    else:
        if not keypress_controls:
            res.group_reason = f"number {res.number} has no keypress_controls"
            return None
        res.group = number_flow_group
        res.group_reason = f"number {res.number}'s keypress_controls"
    group = catalog.flow_group(res.group) if res.group else None
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
    stage: Stage | None = None,
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
    res = SimulationResult(number=number, digit=digit, leg=leg, stage=stage,
                           router=router.name if router else None, buyer=buyer)
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
    group = _pick_group(catalog, res, number_flow_group=num.flow_group,
                        keypress_controls=num.keypress_controls, stage=stage)
    if group is None:
        if res.outcome != INVALID:
            res.reason = f"no key press flows on the {leg} leg"
        return res
    if stage == "prompt" and digit == NO_KEY_PRESS and not group.redirect_no_key_press:
        res.outcome = NO_MATCH
        res.reason = "redirect_no_key_press is off: routing continues"
        return res
    result = match(group, digit, res.call_data)
    if isinstance(result, NoMatch):
        _no_match(res, group, result)
        return res
    _matched(res, group, result, buyer_seconds)
    return res


def _no_match(res: SimulationResult, group: FlowGroup, result: NoMatch) -> None:
    res.outcome = NO_MATCH
    res.misses = [FlowMiss(f"{group.name}/{m.label}", m.position, describe(m.filter), m.why)
                  for m in result.misses]
    if res.stage == "prompt":
        then = ("the no-key-press path runs" if res.digit == NO_KEY_PRESS else
                f"the caller is prompted again (up to {group.max_attempts} presses), "
                "then the no-key-press path runs")
        res.reason = f"{result.reason}; {then}"
    elif group.pass_through_digits:
        res.reason = f"{result.reason}; the digit already reaches the other party"
    else:
        res.reason = f"{result.reason}; on a bridged call the digit is passed on"


def _matched(res: SimulationResult, group: FlowGroup, result: Matched,
             buyer_seconds: float | None) -> None:
    res.matched = f"{group.name}/{result.label}"
    res.matched_position = result.position
    # Flows for the key listed before the match did not match: explain them too.
    earlier = [(p, f) for p, f in group.flows_for(res.digit) if p < result.position]
    if earlier:
        res.misses = _explain_earlier(group, earlier, res.call_data)
    limit = result.flow.buyer_conference_time_limit
    if limit is not None:
        res.time_limit = _time_limit(limit, res.stage, buyer_seconds)
        if res.time_limit.ignored:
            res.outcome, res.reason = IGNORED, res.time_limit.verdict
            return
    res.outcome = MATCHED
    res.would_run = would_run(result.flow, res.stage)


def _explain_earlier(group: FlowGroup, earlier: list[tuple[int, Flow]],
                     data: Mapping[str, str]) -> list[FlowMiss]:
    out: list[FlowMiss] = []
    for position, flow in earlier:
        failing = next(f for f in flow.filters if not filter_matches(f, data))
        out.append(FlowMiss(f"{group.name}/{group.label(position)}", position, describe(failing),
                            explain(failing, data)))
    return out


def _time_limit(limit: int, stage: str, buyer_seconds: float | None) -> TimeLimit:
    if stage == "prompt":
        return TimeLimit(limit, buyer_seconds, False,
                         f"limit {limit}s does not apply at the router prompt (no buyer yet)")
    if buyer_seconds is None:
        return TimeLimit(limit, None, False,
                         f"limit {limit}s not checked: no buyer_seconds given "
                         "(it applies once the buyer is in the conference)")
    if buyer_seconds >= limit:
        return TimeLimit(limit, buyer_seconds, True,
                         f"buyer in conference {buyer_seconds:.1f}s, limit {limit}s: "
                         "the key press would be ignored")
    return TimeLimit(limit, buyer_seconds, False,
                     f"buyer in conference {buyer_seconds:.1f}s, within the limit of {limit}s")
