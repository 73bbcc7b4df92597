"""Key presses on a live call (routing or bridged), on either leg.

On the buyer's leg, an external agent's digits are matched against the buyer's flow group
(``forwards_to_external_agent``); on the caller's leg after the router stage, against the
number's group (``keypress_controls``): :func:`keypress_ari.calls.rules.live_group`.
Filters see the call's data, the buyer's name included. A matched flow past the buyer
conference time limit is ignored; digits no flow uses are passed on to the other party
when the leg absorbs them.
"""

from __future__ import annotations

from keypress_ari.calllog.kinds import EventKind
from keypress_ari.calls.channel_ops import ChannelGone, ChannelOpFailed, ChannelOps
from keypress_ari.calls.flow_runner import FlowRunner
from keypress_ari.calls.rules import Leg, live_group, passes_unused_digit_on, time_limit
from keypress_ari.calls.scope import CallScope
from keypress_ari.calls.state import Stage
from keypress_ari.flows.match import Matched, match
from keypress_ari.flows.model import Flow, FlowGroup


class LiveControl:
    __slots__ = ("_absorbed", "_flows", "_ops", "_scope")

    def __init__(self, scope: CallScope, flows: FlowRunner, ops: ChannelOps, *,
                 digits_absorbed: bool = True) -> None:
        """``digits_absorbed``: the call mode keeps a leg's digits from the other party (the
        Stasis bridge does), so unused ones are passed on; the fastagi and ami modes don't
        (a mapped key is gone for good; AMI only watches)."""
        self._scope, self._flows, self._ops = scope, flows, ops
        self._absorbed = digits_absorbed

    def group(self, leg: Leg) -> FlowGroup | None:
        scope = self._scope
        return scope.group(live_group(leg, scope.number(), scope.buyer()).group)

    async def digit(self, leg: Leg, digit: str, duration_ms: int) -> None:
        scope = self._scope
        ctx, st = scope.ctx, scope.st
        group = self.group(leg)
        if group is None:
            ctx.record(st, EventKind.KEY_PRESS, leg=leg, digit=digit, duration_ms=duration_ms,
                       matched=False, reason=f"no key press flows on the {leg} leg")
            return
        result = match(group, digit, st.data)
        if not isinstance(result, Matched):
            forwarded = await self._pass_on(leg, digit, group)
            ctx.record(st, EventKind.KEY_PRESS, leg=leg, digit=digit, duration_ms=duration_ms,
                       matched=False, reason=result.reason, passed_on=forwarded)
            return
        label = f"{group.name}/{result.label}"
        late = self._too_late(result.flow)
        if late is not None:
            ctx.record(st, EventKind.KEY_PRESS, leg=leg, digit=digit, flow=label,
                       duration_ms=duration_ms, matched=True, ignored=True, reason=late)
            return
        ctx.record(st, EventKind.KEY_PRESS, leg=leg, digit=digit, flow=label,
                   duration_ms=duration_ms, matched=True)
        await self._flows.run(result.flow, label, leg=leg, phase="live")

    def would_run(self, leg: Leg, digit: str) -> Flow | None:
        """The flow :meth:`digit` would run for this press (matched, not too late), or None;
        records nothing."""
        group = self.group(leg)
        if group is None:
            return None
        result = match(group, digit, self._scope.st.data)
        if not isinstance(result, Matched) or self._too_late(result.flow) is not None:
            return None
        return result.flow

    def _too_late(self, flow: Flow) -> str | None:
        """Why a matched flow is ignored: past its buyer conference time limit."""
        if flow.buyer_conference_time_limit is None:
            return None
        scope = self._scope
        entered = scope.st.buyer_entered_at
        seconds = scope.ctx.clock() - entered if entered is not None else None
        verdict = time_limit(flow, "live", seconds)
        return verdict.verdict if verdict is not None and verdict.ignored else None

    async def _pass_on(self, leg: Leg, digit: str, group: FlowGroup) -> bool:
        """Send an unused digit to the other party when this leg's digits are absorbed."""
        scope = self._scope
        st = scope.st
        if not self._absorbed or not passes_unused_digit_on(group,
                                                            bridged=st.stage is Stage.BRIDGED):
            return False
        other = st.buyer_channel if leg == "caller" else st.channel_id
        if other is None:
            return False
        try:
            await self._ops.send_dtmf(other, digit)
        except ChannelGone:
            return False  # hung up meanwhile: its StasisEnd decides what happens
        except ChannelOpFailed as exc:
            scope.ctx.record(st, EventKind.ERROR, leg=leg, request="pass digit on",
                             error=str(exc))
            return False
        return True
