"""Key presses on a live call, and carrying out a matched flow on any leg.

On the buyer's leg, an external agent's digits are matched against the buyer's flow group
(``forwards_to_external_agent``); on the caller's leg after the router stage, against the
number's group (``keypress_controls``). Filters see the call's data, the buyer's name
included. Digits no flow uses are passed on to the other party when the leg absorbs them.
"""

from __future__ import annotations

from keypress_ari.ari.errors import AriError
from keypress_ari.calls.base import GONE, CallBase
from keypress_ari.calls.controls import CONTROLS, NoSuchLeg
from keypress_ari.calls.state import Stage
from keypress_ari.flows.match import Matched, match
from keypress_ari.flows.model import CallControlAction, Flow, FlowGroup
from keypress_ari.webhooks.render import queued_op, render_webhook
from keypress_ari.webhooks.worker import safe_url


class LiveControl(CallBase):
    def live_group(self, leg: str) -> FlowGroup | None:
        if leg == "caller":
            number = self.number()
            return self.group(number.flow_group) if number and number.keypress_controls else None
        buyer = self.buyer()
        if buyer is None or not buyer.forwards_to_external_agent:
            return None
        return self.group(buyer.flow_group)

    async def live_digit(self, leg: str, digit: str, duration_ms: int) -> None:
        st = self.st
        group = self.live_group(leg)
        if group is None:
            self.ctx.record(st, "key_press", leg=leg, digit=digit, duration_ms=duration_ms,
                            matched=False, reason=f"no key press flows on the {leg} leg")
            return
        result = match(group, digit, st.data)
        if not isinstance(result, Matched):
            forwarded = await self._pass_on(leg, digit, group)
            self.ctx.record(st, "key_press", leg=leg, digit=digit, duration_ms=duration_ms,
                            matched=False, reason=result.reason, passed_on=forwarded)
            return
        label = f"{group.name}/{result.label}"
        limit = result.flow.buyer_conference_time_limit
        if limit is not None and st.buyer_entered_at is not None:
            in_bridge = self.ctx.clock() - st.buyer_entered_at
            if in_bridge >= limit:
                self.ctx.record(st, "key_press", leg=leg, digit=digit, flow=label,
                                duration_ms=duration_ms, matched=True, ignored=True,
                                reason=f"buyer in conference {in_bridge:.1f}s, "
                                       f"limit {limit}s")
                return
        self.ctx.record(st, "key_press", leg=leg, digit=digit, flow=label,
                        duration_ms=duration_ms, matched=True)
        await self.apply_flow(result.flow, label, leg=leg)

    async def _pass_on(self, leg: str, digit: str, group: FlowGroup) -> bool:
        """Send an unused digit to the other party when this leg's digits are absorbed."""
        st = self.st
        if group.pass_through_digits or st.stage is not Stage.BRIDGED:
            return False
        other = st.buyer_channel if leg == "caller" else st.channel_id
        if other is None:
            return False
        return await self.ari("pass digit on", self.ctx.ari.send_dtmf(other, digit), leg=leg)

    async def apply_flow(self, flow: Flow, label: str, *, leg: str) -> None:
        st = self.st
        if flow.actions:
            self._queue_webhooks(flow, label, leg)
        if flow.extra_tokens:
            st.set_tokens(dict(flow.extra_tokens))
            self.ctx.record(st, "tokens_set", leg=leg, flow=label, source="flow",
                            tokens=dict(flow.extra_tokens))
        hang_up = False
        for action in flow.call_control_actions:
            if action.kind == "hangup":
                self.ctx.record(st, "call_control_action", leg=leg, flow=label,
                                action="hangup", outcome="ok")
                hang_up = True
                break  # nothing after a hangup could reach anyone
            await self._control(action, label, leg)
        if flow.disposition:
            st.disposition = flow.disposition
            st.dirty = True
            self.ctx.record(st, "disposition", leg=leg, flow=label, disposition=flow.disposition)
            await self.end_call("normal", f"disposition {flow.disposition}")
        elif hang_up:
            await self.end_call("normal", f"hangup action of {label}")
        elif flow.continue_routing:
            await self.route("flow says continue routing", label)

    def _queue_webhooks(self, flow: Flow, label: str, leg: str) -> None:
        """Queue the flow's webhooks right behind the key press row that caused them, so
        both commit in one transaction; the webhook worker delivers them."""
        st = self.st
        data = {**st.data, **flow.extra_tokens, "digit": flow.key,
                "disposition": flow.disposition or st.disposition or "", "flow": label,
                "call_id": st.call_id, "leg": leg}
        queued = []
        for action in flow.actions:
            rendered = render_webhook(action.webhook, data)
            op = queued_op(st.call_id, label, rendered)
            self.ctx.emit(op)
            queued.append((op, rendered))
        for op, rendered in queued:
            self.ctx.record(st, "webhook_queued", leg=leg, flow=label,
                            idempotency_key=op.idempotency_key, method=rendered.method,
                            url=safe_url(rendered.url), warnings=list(rendered.warnings))

    async def _control(self, action: CallControlAction, label: str, leg: str) -> None:
        """Run one call control action and log its outcome (ok, skipped or the ARI error)."""
        st = self.st
        outcome, detail = "ok", ""
        try:
            if action.kind == "block_caller":
                if not st.caller_number:
                    raise NoSuchLeg("the caller has no number to block")
                reason = action.reason or f"flow {label}"
                self.ctx.blocklist.add(self.ctx, st.caller_number, reason, st.call_id)
                detail = f"blocked {st.caller_number}"
            else:
                detail = await CONTROLS[action.kind](self.ctx.ari, st, action)
                st.dirty = True
        except NoSuchLeg as exc:
            outcome, detail = "skipped", str(exc)
        except GONE as exc:
            outcome, detail = "failed", f"channel gone ({exc.status})"
        except AriError as exc:
            outcome, detail = "failed", str(exc)
        self.ctx.record(st, "call_control_action", leg=leg, flow=label, action=action.kind,
                        outcome=outcome, result=detail)
