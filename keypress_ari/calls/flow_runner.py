"""Carrying out a matched flow on any leg, in any call mode: webhooks queued, tokens set,
call control actions run in order, then the call ends, routing continues or the call
carries on (the order is :func:`keypress_ari.calls.rules.plan_flow`'s).

The runner acts through two ports it is given: :class:`ChannelOps` for what reaches the
channels (mute, hold, play) and a :class:`CallDriver` for what changes the call as a whole
(end it, continue routing), so it never knows whether the call came from ARI, AGI or AMI.
"""

from __future__ import annotations

from typing import Protocol

from keypress_ari.calllog.kinds import EventKind
from keypress_ari.calls.channel_ops import ChannelOpFailed, ChannelOps
from keypress_ari.calls.controls import CONTROLS, NoSuchLeg
from keypress_ari.calls.rules import PressPhase, plan_flow
from keypress_ari.calls.scope import CallScope
from keypress_ari.flows.model import CallControlAction, Flow
from keypress_ari.webhooks.render import queued_op, render_webhook
from keypress_ari.webhooks.urls import safe_url


class CallDriver(Protocol):
    """What a flow may do to the call as a whole; each call mode drives its own calls."""

    async def end_call(self, cause: str, why: str) -> None:
        """End the call: every leg hung up."""

    async def continue_routing(self, reason: str, flow: str | None) -> None:
        """Drop live buyer legs and dial the next available buyer."""


class FlowRunner:
    __slots__ = ("_driver", "_ops", "_scope")

    def __init__(self, scope: CallScope, ops: ChannelOps, driver: CallDriver) -> None:
        self._scope, self._ops, self._driver = scope, ops, driver

    async def run(self, flow: Flow, label: str, *, leg: str, phase: PressPhase) -> None:
        ctx, st = self._scope.ctx, self._scope.st
        plan = plan_flow(flow, phase)
        if flow.actions:
            self._queue_webhooks(flow, label, leg)
        if plan.tokens:
            st.set_tokens(dict(plan.tokens))
            ctx.record(st, EventKind.TOKENS_SET, leg=leg, flow=label, source="flow",
                       tokens=dict(plan.tokens))
        for action in plan.controls:
            await self.control(action, label, leg)
        if plan.hangup:
            ctx.record(st, EventKind.CALL_CONTROL_ACTION, leg=leg, flow=label,
                       action="hangup", outcome="ok")
        if plan.disposition:
            st.disposition = plan.disposition
            st.dirty = True
            ctx.record(st, EventKind.DISPOSITION, leg=leg, flow=label,
                       disposition=plan.disposition)
            await self._driver.end_call("normal", f"disposition {plan.disposition}")
        elif plan.hangup:
            await self._driver.end_call("normal", f"hangup action of {label}")
        elif plan.continue_routing:
            await self._driver.continue_routing("flow says continue routing", label)

    def _queue_webhooks(self, flow: Flow, label: str, leg: str) -> None:
        """Queue the flow's webhooks right behind the key press row that caused them, so
        both commit in one transaction; the webhook worker delivers them."""
        ctx, st = self._scope.ctx, self._scope.st
        data = {**st.data, **flow.extra_tokens, "digit": flow.key,
                "disposition": flow.disposition or st.disposition or "", "flow": label,
                "call_id": st.call_id, "leg": leg}
        queued = []
        for action in flow.actions:
            rendered = render_webhook(action.webhook, data)
            op = queued_op(st.call_id, label, rendered)
            ctx.emit(op)
            queued.append((op, rendered))
        for op, rendered in queued:
            ctx.record(st, EventKind.WEBHOOK_QUEUED, leg=leg, flow=label,
                       idempotency_key=op.idempotency_key, method=rendered.method,
                       url=safe_url(rendered.url), warnings=list(rendered.warnings))

    async def control(self, action: CallControlAction, label: str, leg: str) -> None:
        """Run one call control action and log its outcome (ok, skipped or failed)."""
        ctx, st = self._scope.ctx, self._scope.st
        outcome, detail = "ok", ""
        try:
            if action.kind == "block_caller":
                if not st.caller_number:
                    raise NoSuchLeg("the caller has no number to block")
                reason = action.reason or f"flow {label}"
                ctx.blocklist.add(ctx, st.caller_number, reason, st.call_id)
                detail = f"blocked {st.caller_number}"
            else:
                detail = await CONTROLS[action.kind](self._ops, st, action)
                st.dirty = True
        except NoSuchLeg as exc:
            outcome, detail = "skipped", str(exc)
        except ChannelOpFailed as exc:  # ChannelGone included: "channel gone (404)"
            outcome, detail = "failed", str(exc)
        ctx.record(st, EventKind.CALL_CONTROL_ACTION, leg=leg, flow=label, action=action.kind,
                   outcome=outcome, result=detail)
