"""One call: its state object and the handling of its events, one at a time, in order.

The dispatcher feeds a Call the ARI events of every leg it has (caller, buyer legs) and its
own timer. This module routes each event to the stage that handles it; the stages live in
``prompting`` (router key press), ``dialing`` (buyers, bridge, ending) and ``live`` (key
presses on a live call, call control actions). Any ARI request may fail with "channel gone"
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
from keypress_ari.calls.base import CallBase, TimerFired
from keypress_ari.calls.dialing import Dialing
from keypress_ari.calls.live import LiveControl
from keypress_ari.calls.prompting import PromptStage
from keypress_ari.calls.resync import ChannelVanished, Resumed
from keypress_ari.calls.state import (
    CALLER_NAME,
    CALLER_NUMBER,
    DIALLED_NUMBER,
    NUMBER,
    ROUTER,
    Stage,
    parse_stasis_args,
)
from keypress_ari.store.calllog import CallOpened

log = structlog.get_logger("keypress.call")

TOKEN_VARIABLE_PREFIX = "KEYPRESS_TOKEN_"
_KEY_PRESS_STAGES = (Stage.PROMPTING, Stage.WAITING)
_LIVE_STAGES = (Stage.ROUTING, Stage.BRIDGED)
_LEG_GONE = (ev.StasisEnd, ev.ChannelDestroyed)


class Call(PromptStage, Dialing, LiveControl, CallBase):
    _last_digit: tuple[str, str, float] | None = None  # (channel, digit, monotonic time)
    _timeout_due = False  # the press-1 timeout came due while ARI was disconnected
    _bucket: tuple[float, float] | None = None  # key press rate limit: (tokens, monotonic)
    _limited = 0  # presses dropped by the rate limit in the current burst

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
        elif self._hanging_up:
            pass  # the caller's channel is going away: only its end still matters
        elif isinstance(event, ev.Dial):
            await self.dial_status(event.peer.id, event.dialstatus)
        elif isinstance(event, ev.PlaybackFinished):
            await self._playback_finished(event.playback.id, event.playback.state)
        elif isinstance(event, TimerFired):
            if event.generation != st.timer_generation:
                pass  # a cancelled timer
            elif st.stage is Stage.ROUTING:
                await self.dial_timed_out()
            elif st.stage is Stage.WAITING:
                if self.ctx.is_connected():
                    await self.press_timeout()
                else:
                    self._timeout_due = True  # fires when ARI is back (see _resume)
                    self.ctx.record(st, "timeout_deferred", reason="ARI events disconnected")
        elif isinstance(event, ev.ChannelHangupRequest):
            if event.channel.id == st.channel_id:
                self._hanging_up = True
                self.cancel_timer()
        elif isinstance(event, ev.StasisStart):
            if event.channel.id == st.channel_id:
                await self._start(event)
            else:
                await self.buyer_leg_ready(event.channel.id)
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
        self.ctx.record(st, "call_started", channel=ch.name,
                        caller_name=ch.caller.name if ch.caller else "", args=event.args)
        if st.caller_number in self.ctx.blocklist:
            self.ctx.record(st, "blocked_caller", caller_number=st.caller_number)
            await self.end_call(self.ctx.settings.blocked_caller_cause, "blocked caller")
            return
        if router is None:
            self.ctx.record(st, "unknown_number", number=st.number)
            log.info("unknown number; hanging up", number=st.number, channel=ch.id)
            await self.end_call(self.ctx.settings.unknown_number_cause, "unknown number")
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
            self.ctx.record(st, "tokens_set", source="call", tokens=tokens)
        if router.request_key_press:
            await self.start_prompting(router)
        else:
            await self.route("router does not request a key press", None)

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
        leg = "caller" if channel_id == st.channel_id else "buyer"
        if leg == "buyer" and channel_id != st.buyer_channel:
            return  # a leg being dropped
        now = time.monotonic()
        last, self._last_digit = self._last_digit, (channel_id, digit, now)
        window = self.ctx.settings.dtmf_dedup_ms / 1000
        if last is not None and last[:2] == (channel_id, digit) and now - last[2] < window:
            self.ctx.record(st, "key_press", leg=leg, digit=digit, duration_ms=duration_ms,
                            matched=False, ignored=True,
                            reason=f"duplicate within {self.ctx.settings.dtmf_dedup_ms} ms")
            return
        if not self._allow_press():
            self._limited += 1
            if self._limited == 1:  # once per burst; the burst's count is logged at its end
                s = self.ctx.settings
                self.ctx.record(st, "key_press", leg=leg, digit=digit, duration_ms=duration_ms,
                                matched=False, ignored=True,
                                reason=f"rate limited: over {s.max_presses_per_second:g}/s "
                                       f"(burst {s.press_burst})")
            return
        self._end_burst(leg)
        if leg == "caller" and st.stage in _KEY_PRESS_STAGES:
            await self.prompt_digit(digit, duration_ms)
        elif st.stage in _LIVE_STAGES:
            await self.live_digit(leg, digit, duration_ms)
        else:
            self.ctx.record(st, "key_press", leg=leg, digit=digit, duration_ms=duration_ms,
                            matched=False, ignored=True, reason=f"call is {st.stage.value}")

    def _allow_press(self) -> bool:
        """A token bucket per call: ``press_burst`` at once, ``max_presses_per_second``
        sustained."""
        settings = self.ctx.settings
        burst, rate = float(settings.press_burst), settings.max_presses_per_second
        now = time.monotonic()
        tokens, last = self._bucket or (burst, now)
        tokens = min(burst, tokens + (now - last) * rate)
        allowed = tokens >= 1.0
        self._bucket = (tokens - 1.0 if allowed else tokens, now)
        return allowed

    def _end_burst(self, leg: str) -> None:
        if self._limited:
            self.ctx.record(self.st, "rate_limited", leg=leg, dropped=self._limited)
            self._limited = 0

    async def _playback_finished(self, playback_id: str, state: str) -> None:
        st = self.st
        if playback_id == st.prompt_playback_id:
            await self.prompt_finished(state)
        elif playback_id == st.final_playback_id:
            await self.final_prompt_finished()

    async def _leg_gone(self, channel_id: str,
                        event: ev.StasisEnd | ev.ChannelDestroyed | ChannelVanished) -> None:
        st = self.st
        if channel_id != st.channel_id:
            if isinstance(event, ChannelVanished):
                await self.buyer_leg_gone(channel_id, destroyed=True, cause_txt=event.cause_txt)
            elif isinstance(event, ev.ChannelDestroyed):
                await self.buyer_leg_gone(channel_id, destroyed=True, cause=event.cause,
                                          cause_txt=event.cause_txt)
            else:
                await self.buyer_leg_gone(channel_id, destroyed=False)
            return
        self.cancel_timer()
        self._end_burst("caller")
        was = st.stage.value
        st.move(Stage.ENDED)
        st.prompt_playback_id = st.final_playback_id = None
        await self.caller_gone()
        ended_by = st.ended_by or "caller"
        cause = getattr(event, "cause_txt", None)
        self.ctx.record(st, "call_ended", ended_by=ended_by, stage=was,
                        **({"cause": cause} if cause else {}))
        self.ctx.persist(st, ended_by=ended_by, end_reason=f"hung up by {ended_by} while {was}")


    async def _resume(self, adopted: bool) -> None:
        """Back in touch with Asterisk (reconnected, or adopted by a restarted daemon):
        catch up with what may have happened while no event could arrive."""
        st = self.st
        due, self._timeout_due = self._timeout_due, False
        if adopted:
            self.ctx.record(st, "adopted", stage=st.stage.value)
        if st.stage is Stage.WAITING:
            left = (st.deadline or 0) - time.time()
            if due or left <= 0:
                await self.press_timeout()
            elif adopted:
                self.start_timer(left, time.time() + left)
        elif st.stage is Stage.PROMPTING and st.prompt_playback_id:
            if not await self._playback_alive(st.prompt_playback_id):
                await self.prompt_finished("done")
        elif st.stage is Stage.ENDING and st.final_playback_id:
            if not await self._playback_alive(st.final_playback_id):
                await self.final_prompt_finished()
        elif st.stage is Stage.ROUTING and st.buyer_channel:
            try:
                leg = await self.ctx.ari.get_channel(st.buyer_channel)
            except AriError:
                return  # gone: its ChannelVanished closes it
            if leg.state == "Up":
                await self.bridge_buyer(st.buyer_channel)  # answered while we were away
            elif adopted and st.deadline is not None:
                left = max(st.deadline - time.time(), 0.1)  # the dial's own deadline
                self.start_timer(left, time.time() + left)

    async def _playback_alive(self, playback_id: str) -> bool:
        try:
            await self.ctx.ari.get_playback(playback_id)
        except AriError:
            return False
        return True


def new_call_id() -> str:
    return str(uuid.uuid4())
