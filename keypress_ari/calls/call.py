"""One call: its state object and the handling of its events, one at a time, in order.

The dispatcher feeds a Call the ARI events of every leg it has (caller, buyer legs) and its
own timer. A Call is one object that owns its parts, each built here with what it may touch
(:class:`~keypress_ari.calls.scope.CallScope`: the state, the services, the timer) and the
other parts it uses:

* ``gate`` (:mod:`.press_gate`): duplicate and rate-limited presses stop here;
* ``dialing`` (:mod:`.dialing`): buyers, the bridge, ending the call; the flow runner's
  driver (end the call, continue routing);
* ``flows`` (:mod:`.flow_runner`): carrying out a matched flow through the channel port;
* ``prompting`` (:mod:`.prompting`): the router's key press stage;
* ``live`` (:mod:`.live`): presses on a live call.

What each press leads to is decided by :mod:`.rules` (pure); this module routes each event
to the part that handles it. Any ARI request may fail with "channel gone"
(404/409) when a party hangs up at that moment: that is normal and only logged at debug;
the StasisEnd that follows decides what happens.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import structlog

from keypress_ari.ari import events as ev
from keypress_ari.ari.errors import AriError
from keypress_ari.calllog.kinds import EventKind
from keypress_ari.calllog.ops import CallOpened
from keypress_ari.calls.ari_channel_ops import AriChannelOps
from keypress_ari.calls.context import CallContext
from keypress_ari.calls.dialing import Dialing
from keypress_ari.calls.flow_runner import FlowRunner
from keypress_ari.calls.handover import HandedOver, Handover, OperatorAction
from keypress_ari.calls.live import LiveControl
from keypress_ari.calls.press_gate import PressGate
from keypress_ari.calls.prompting import Prompting
from keypress_ari.calls.resync import ChannelVanished, Resumed
from keypress_ari.calls.rules import Leg
from keypress_ari.calls.scope import CallHost, CallScope, TimerFired
from keypress_ari.calls.state import (
    CALLER_NAME,
    CALLER_NUMBER,
    DIALLED_NUMBER,
    NUMBER,
    ROUTER,
    CallState,
    Stage,
    parse_stasis_args,
)
from keypress_ari.flows.actions import CallControlAction

log = structlog.get_logger("keypress.call")

TOKEN_VARIABLE_PREFIX = "KEYPRESS_TOKEN_"
_KEY_PRESS_STAGES = (Stage.PROMPTING, Stage.WAITING)
_LIVE_STAGES = (Stage.ROUTING, Stage.BRIDGED)
_LEG_GONE = (ev.StasisEnd, ev.ChannelDestroyed)
# Seconds a handed-over call waits for its second leg to enter the app (they come ~1 ms apart).
HANDOVER_WAIT = 5.0


class Call:
    __slots__ = ("_hanging_up", "_timeout_due", "ctx", "dialing", "flows", "gate", "handover",
                 "live", "prompting", "scope", "st")

    def __init__(self, ctx: CallContext, state: CallState, host: CallHost) -> None:
        self.ctx, self.st = ctx, state
        self.scope = scope = CallScope(ctx, state, host)
        self.gate = PressGate(ctx.settings)
        self.dialing = dialing = Dialing(scope)
        ops = AriChannelOps(ctx.ari)
        self.flows = flows = FlowRunner(scope, ops, dialing)
        self.prompting = Prompting(scope, flows, dialing)
        self.live = LiveControl(scope, flows, ops)
        self._hanging_up = False  # a hangup request for the caller arrived; StasisEnd follows
        self._timeout_due = False  # the press-1 timeout came due while ARI was disconnected
        # A call of the ami mode on its way into the app, until both its legs are in.
        self.handover: Handover | None = None

    @property
    def ended(self) -> bool:
        return self.st.stage is Stage.ENDED

    def channel_ids(self) -> list[str]:
        return [self.st.channel_id, *self.st.live_buyer_legs]

    async def handle(self, event: object) -> None:
        if self.ended:
            return
        st = self.st
        if type(event) is ev.ChannelDtmfReceived:  # the key press path: tested first
            if not self._hanging_up:  # else the caller's channel is going away
                await self._digit(event.channel.id, event.digit, event.duration_ms)
        elif isinstance(event, _LEG_GONE):
            await self._leg_gone(event.channel.id, event)
        elif isinstance(event, ChannelVanished):
            await self._leg_gone(event.channel_id, event)
        elif isinstance(event, Resumed):
            await self._resume(event.adopted)
        elif isinstance(event, HandedOver):
            await self._handed_over(event.channel_id)
        elif isinstance(event, OperatorAction):
            if not self._hanging_up:
                await self._operator(event)
        elif self._hanging_up:
            pass  # the caller's channel is going away: only its end still matters
        elif isinstance(event, ev.Dial):
            await self.dialing.dial_status(event.peer.id, event.dialstatus)
        elif isinstance(event, ev.PlaybackFinished):
            await self._playback_finished(event.playback.id, event.playback.state)
        elif isinstance(event, TimerFired):
            if event.generation != st.timer_generation:
                pass  # a cancelled timer
            elif self.handover is not None:
                await self._handover_timed_out()
            elif st.stage is Stage.ROUTING:
                await self.dialing.dial_timed_out()
            elif st.stage is Stage.WAITING:
                if self.ctx.is_connected():
                    await self.prompting.timed_out()
                else:
                    self._timeout_due = True  # fires when ARI is back (see _resume)
                    self.ctx.record(st, EventKind.TIMEOUT_DEFERRED,
                                    reason="ARI events disconnected")
        elif isinstance(event, ev.ChannelHangupRequest):
            if event.channel.id == st.channel_id:
                self._hanging_up = True
                self.scope.timer.cancel()
        elif isinstance(event, ev.StasisStart):
            if event.channel.id == st.channel_id:
                await self._start(event)
            else:
                await self.dialing.buyer_leg_ready(event.channel.id)
        if st.dirty and not self.ended:
            self.ctx.persist(st)

    # ---- entry ---------------------------------------------------------------------------

    async def _start(self, event: ev.StasisStart) -> None:
        st, ch = self.st, event.channel
        if st.legs:
            return  # already started (a resync saw the channel before its StasisStart came)
        args = parse_stasis_args(event.args)
        st.number = args.pop("number", "") or (ch.dialplan.exten if ch.dialplan else "")
        st.caller_number = ch.caller.number if ch.caller else ""
        catalog = self.ctx.catalog.current
        number = catalog.number(st.number)
        router = catalog.router(number.router) if number else None
        st.router = router.name if router else None
        st.legs["caller"] = ch.id
        self.ctx.emit(CallOpened(st.call_id, st.number, st.caller_number, st.router, ch.id,
                                 st.stage.value, st.started_at))
        self.ctx.record(st, EventKind.CALL_STARTED, channel=ch.name,
                        caller_name=ch.caller.name if ch.caller else "", args=event.args)
        if st.caller_number in self.ctx.blocklist:
            self.ctx.record(st, EventKind.BLOCKED_CALLER, caller_number=st.caller_number)
            await self.dialing.end_call(self.ctx.settings.blocked_caller_cause, "blocked caller")
            return
        if router is None:
            self.ctx.record(st, EventKind.UNKNOWN_NUMBER, number=st.number)
            log.info("unknown number; hanging up", number=st.number, channel=ch.id)
            await self.dialing.end_call(self.ctx.settings.unknown_number_cause, "unknown number")
            return
        st.data.update({
            CALLER_NUMBER: st.caller_number,
            CALLER_NAME: ch.caller.name if ch.caller else "",
            DIALLED_NUMBER: st.number,
            NUMBER: st.number,
            ROUTER: router.name,
        })
        tokens = await self._channel_tokens(ch.id)
        tokens.update(args)
        if tokens:
            st.set_tokens(tokens)
            self.ctx.record(st, EventKind.TOKENS_SET, source="call", tokens=tokens)
        if router.request_key_press:
            await self.prompting.start(router)
        else:
            await self.dialing.continue_routing("router does not request a key press", None)

    async def _operator(self, event: OperatorAction) -> None:
        """An operator's action from the console: logged, then run as a flow's would be."""
        self.ctx.record(self.st, EventKind.OPERATOR_ACTION, action=event.action, by=event.by)
        if event.action == "hangup":
            await self.dialing.end_call("normal", f"hung up by an operator ({event.by})")
        else:
            await self.flows.control(CallControlAction(kind=event.action),
                                     f"operator ({event.by})", "operator")

    async def _handed_over(self, channel_id: str) -> None:
        """A leg of a call the ami mode redirected here is in the app; once both are, they
        meet in the call's bridge and the press that moved the call is handled here."""
        handover = self.handover
        if handover is None:
            return
        if not handover.arrive(channel_id):
            if len(handover.arrived) == 1:  # should the other leg never come
                self.scope.timer.start(HANDOVER_WAIT, time.time() + HANDOVER_WAIT)
            return
        self.scope.timer.cancel()
        self.handover = None
        st = self.st
        self.ctx.record(st, EventKind.ENTERED_STASIS, legs=handover.channels())
        if handover.buyer is not None and not await self.dialing.bridge_legs(handover.buyer):
            return
        if handover.action is not None:
            await self._operator(OperatorAction(st.channel_id, handover.action, handover.by))
            return
        await self.live.digit(handover.leg, handover.digit, handover.duration_ms)

    async def _handover_timed_out(self) -> None:
        handover, self.handover = self.handover, None
        assert handover is not None
        missing = [c for c in handover.channels() if c not in handover.arrived]
        self.ctx.record(self.st, EventKind.ERROR, request="enter stasis",
                        error=f"legs {missing} never entered the Stasis app")
        for channel_id in missing:
            await self._leg_gone(channel_id, ChannelVanished(channel_id, "never entered Stasis"))
        if not self.ended:
            await self.dialing.end_call("normal", "a leg never entered the Stasis app")

    async def _channel_tokens(self, channel_id: str) -> dict[str, str]:
        """Channel variables ``KEYPRESS_TOKEN_<NAME>`` for the tokens the flows use."""
        names = sorted(self.ctx.catalog.current.referenced_tokens())
        if not names:
            return {}
        values = await asyncio.gather(
            *(self.ctx.ari.get_variable(channel_id, TOKEN_VARIABLE_PREFIX + n.upper())
              for n in names),
            return_exceptions=True,
        )
        found: dict[str, str] = {}
        for name, value in zip(names, values, strict=True):
            if isinstance(value, str) and value != "":
                found[name] = value
        return found

    # ---- events --------------------------------------------------------------------------

    async def _digit(self, channel_id: str, digit: str, duration_ms: int) -> None:
        st = self.st
        leg: Leg = "caller" if channel_id == st.channel_id else "buyer"
        if leg == "buyer" and channel_id != st.buyer_channel:
            return  # a leg being dropped
        drop = self.gate.check(channel_id, digit, time.monotonic())
        if drop is not None:
            if drop.logged:
                self.ctx.record(st, EventKind.KEY_PRESS, leg=leg, digit=digit,
                                duration_ms=duration_ms, matched=False, ignored=True,
                                reason=drop.reason)
            return
        self._end_burst(leg)
        if leg == "caller" and st.stage in _KEY_PRESS_STAGES:
            await self.prompting.digit(digit, duration_ms)
        elif st.stage in _LIVE_STAGES:
            await self.live.digit(leg, digit, duration_ms)
        else:
            self.ctx.record(st, EventKind.KEY_PRESS, leg=leg, digit=digit,
                            duration_ms=duration_ms, matched=False, ignored=True,
                            reason=f"call is {st.stage.value}")

    def _end_burst(self, leg: str) -> None:
        dropped = self.gate.end_burst()
        if dropped:
            self.ctx.record(self.st, EventKind.RATE_LIMITED, leg=leg, dropped=dropped)

    async def _playback_finished(self, playback_id: str, state: str) -> None:
        st = self.st
        if playback_id == st.prompt_playback_id:
            await self.prompting.prompt_finished(state)
        elif playback_id == st.final_playback_id:
            await self.dialing.final_prompt_finished()

    async def _leg_gone(self, channel_id: str,
                        event: ev.StasisEnd | ev.ChannelDestroyed | ChannelVanished) -> None:
        st = self.st
        if channel_id != st.channel_id:
            if isinstance(event, ChannelVanished):
                await self.dialing.buyer_leg_gone(channel_id, destroyed=True,
                                                  cause_txt=event.cause_txt)
            elif isinstance(event, ev.ChannelDestroyed):
                await self.dialing.buyer_leg_gone(channel_id, destroyed=True, cause=event.cause,
                                          cause_txt=event.cause_txt)
            else:
                await self.dialing.buyer_leg_gone(channel_id, destroyed=False)
            return
        self.scope.timer.cancel()
        self._end_burst("caller")
        was = st.stage.value
        st.move(Stage.ENDED)
        st.prompt_playback_id = st.final_playback_id = None
        await self.dialing.caller_gone()
        ended_by = st.ended_by or "caller"
        cause = getattr(event, "cause_txt", None)
        self.ctx.record(st, EventKind.CALL_ENDED, ended_by=ended_by, stage=was,
                        **({"cause": cause} if cause else {}))
        self.ctx.persist(st, ended_by=ended_by, end_reason=f"hung up by {ended_by} while {was}")


    async def _resume(self, adopted: bool) -> None:
        """Back in touch with Asterisk (reconnected, or adopted by a restarted daemon):
        catch up with what may have happened while no event could arrive."""
        st = self.st
        due, self._timeout_due = self._timeout_due, False
        if adopted:
            self.ctx.record(st, EventKind.ADOPTED, stage=st.stage.value)
        if st.stage is Stage.WAITING:
            left = (st.deadline or 0) - time.time()
            if due or left <= 0:
                await self.prompting.timed_out()
            elif adopted:
                self.scope.timer.start(left, time.time() + left)
        elif st.stage is Stage.PROMPTING and st.prompt_playback_id:
            if not await self._playback_alive(st.prompt_playback_id):
                await self.prompting.prompt_finished("done")
        elif st.stage is Stage.ENDING and st.final_playback_id:
            if not await self._playback_alive(st.final_playback_id):
                await self.dialing.final_prompt_finished()
        elif st.stage is Stage.ROUTING and st.buyer_channel:
            try:
                leg = await self.ctx.ari.get_channel(st.buyer_channel)
            except AriError:
                return  # gone: its ChannelVanished closes it
            if leg.state == "Up":
                await self.dialing.bridge_buyer(st.buyer_channel)  # answered while we were away
            elif adopted and st.deadline is not None:
                left = max(st.deadline - time.time(), 0.1)  # the dial's own deadline
                self.scope.timer.start(left, time.time() + left)

    async def _playback_alive(self, playback_id: str) -> bool:
        try:
            await self.ctx.ari.get_playback(playback_id)
        except AriError:
            return False
        return True


def new_call_id() -> str:
    return str(uuid.uuid4())
