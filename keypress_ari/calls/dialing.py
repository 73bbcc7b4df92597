"""Routing to buyers: dial the next available buyer, bridge on answer, move on on failure,
and end the call cleanly whichever side goes first.

Buyer legs are created with ``POST /channels/create`` (originator = the caller) and then
dialled, so the call's dispatcher knows the leg before its first event. Caller and buyer
meet in one bridge created as ``mixing,dtmf_events``: a plain mixing bridge turns into a
native RTP bridge and then no DTMF event arrives from either leg.
"""

from __future__ import annotations

import time
import uuid

from keypress_ari.ari.errors import AriError
from keypress_ari.calllog.kinds import EventKind
from keypress_ari.calls.buyer_choice import next_buyer
from keypress_ari.calls.rules import Leg, absorbs_digits, live_group
from keypress_ari.calls.scope import GONE, CallScope
from keypress_ari.calls.state import BUYER, Stage

FAILED_DIALSTATUS = frozenset({"BUSY", "NOANSWER", "CONGESTION", "CHANUNAVAIL", "CANCEL"})
# When a dial times out Asterisk hangs the leg up without a final Dial event: the hangup
# cause of the destroyed leg says what happened (Q.850 codes).
CAUSE_STATUS = {17: "BUSY", 18: "NOANSWER", 19: "NOANSWER", 21: "REJECTED", 1: "CHANUNAVAIL",
                3: "CHANUNAVAIL", 20: "CHANUNAVAIL", 27: "CHANUNAVAIL", 34: "CONGESTION",
                38: "CONGESTION", 42: "CONGESTION"}
NO_BUYER = "no_buyer_available"
# Seconds past a buyer's ring_timeout after which a dial with no outcome counts as failed
# (Asterisk reports every outcome; this only keeps a lost event from stranding a call).
DIAL_GRACE = 10.0


class Dialing:
    """The Stasis call's buyers: it is also the call's :class:`CallDriver` (end the call,
    continue routing) for the flow runner."""

    __slots__ = ("_ringing", "_scope", "ctx", "st")

    def __init__(self, scope: CallScope) -> None:
        self._scope = scope
        self.ctx, self.st = scope.ctx, scope.st
        self._ringing = False  # the caller hears ringing (or music) while buyers ring

    async def continue_routing(self, reason: str, flow: str | None) -> None:
        st = self.st
        self._scope.timer.cancel()
        self.ctx.record(st, EventKind.CONTINUE_ROUTING, flow=flow, reason=reason)
        await self.drop_buyer_legs("continue routing")
        st.move(Stage.ROUTING)
        await self._dial_next()

    async def _dial_next(self) -> None:
        st = self.st
        router = self._scope.router()
        if router is None:
            await self._no_buyer()
            return
        refused: list[str] = []  # at their limit on another daemon: skipped on this walk
        while True:  # bounded: each turn refuses one more of the router's buyers, or ends
            buyer, skipped = next_buyer(router, self.ctx.catalog.current, [*st.tried, *refused],
                                        self.ctx.limits.live)
            for skip in skipped:
                self.ctx.record(st, EventKind.BUYER_SKIPPED, leg="buyer", buyer=skip.buyer,
                                reason=skip.why)
            if buyer is None:
                await self._no_buyer()
                return
            channel_id = f"kp-{uuid.uuid4().hex}"
            if buyer.max_concurrency is not None:
                # A limited buyer is reserved across daemons (a PostgreSQL round trip): the
                # caller's ringing goes first, so a key press's first request never waits.
                await self._caller_hears_ringing()
            grant = await self.ctx.limits.reserve(buyer, channel_id)
            if grant.granted:
                break
            refused.append(buyer.name)
            self.ctx.record(st, EventKind.BUYER_SKIPPED, leg="buyer", buyer=buyer.name,
                            reason=f"at max_concurrency {buyer.max_concurrency}",
                            live=grant.live, counted=grant.counted)
        st.tried.append(buyer.name)
        st.buyer, st.buyer_channel, st.buyer_entered_at = buyer.name, channel_id, None
        st.live_buyer_legs[channel_id] = buyer.name
        st.legs[f"buyer:{buyer.name}:{len(st.tried)}"] = channel_id
        st.data[BUYER] = buyer.name
        st.dirty = True
        self._scope.host.attach(channel_id, st.channel_id)
        limit = {"counted": grant.counted} if grant.counted else {}  # where the limit was counted
        self.ctx.record(st, EventKind.DIALING, leg="buyer", buyer=buyer.name,
                        endpoint=buyer.endpoint,
                        ring_timeout=buyer.ring_timeout, attempt=len(st.tried), **limit)
        await self._caller_hears_ringing()
        try:
            await self.ctx.ari.create_channel(buyer.endpoint, app=self.ctx.app, app_args="buyer",
                                              channel_id=channel_id, originator=st.channel_id)
        except AriError as exc:
            await self._buyer_failed(channel_id, f"could not create the leg: {exc}")
            return
        # The leg is dialled once it is in Stasis (its StasisStart): a dial sent before
        # that is refused with 409. Should that event never come, the timer moves on.
        self._start_dial_timer(buyer.ring_timeout)

    async def buyer_leg_ready(self, channel_id: str) -> None:
        """The buyer leg entered Stasis: dial it."""
        st = self.st
        buyer = self._scope.buyer()
        if channel_id != st.buyer_channel or st.stage is not Stage.ROUTING or buyer is None:
            return
        try:
            await self.ctx.ari.dial(channel_id, caller=st.channel_id, timeout=buyer.ring_timeout)
        except AriError as exc:
            await self._buyer_failed(channel_id, f"dial failed: {exc}")
            return
        self._start_dial_timer(buyer.ring_timeout)

    def _start_dial_timer(self, ring_timeout: int) -> None:
        """Fail the buyer if no outcome is reported ``DIAL_GRACE`` after its ring timeout."""
        wait = ring_timeout + DIAL_GRACE
        self._scope.timer.start(wait, time.time() + wait)

    async def dial_timed_out(self) -> None:
        """No outcome for the dialled buyer long after its ring timeout: move on."""
        if self.st.buyer_channel is not None:
            await self._buyer_failed(self.st.buyer_channel, "no outcome reported in time")

    async def dial_status(self, channel_id: str, status: str) -> None:
        """A ``Dial`` event for one of our buyer legs."""
        st = self.st
        if channel_id != st.buyer_channel or st.stage is not Stage.ROUTING:
            return
        if status == "ANSWER":
            await self.bridge_buyer(channel_id)
        elif status == "RINGING":
            self.ctx.record(st, EventKind.BUYER_RINGING, leg="buyer", buyer=st.buyer)
        elif status in FAILED_DIALSTATUS:
            await self._buyer_failed(channel_id, status)

    async def _buyer_failed(self, channel_id: str, why: str, cause: int | None = None) -> None:
        st = self.st
        self._scope.timer.cancel()
        self.ctx.record(st, EventKind.BUYER_FAILED, leg="buyer", buyer=st.buyer, reason=why,
                        cause=cause)
        st.buyer_channel = None
        if self._release_leg(channel_id):
            await self._hangup_leg(channel_id)
        if st.stage is Stage.ROUTING:
            await self._dial_next()

    async def bridge_buyer(self, channel_id: str) -> None:
        st = self.st
        self._scope.timer.cancel()
        self.ctx.record(st, EventKind.BUYER_ANSWERED, leg="buyer", buyer=st.buyer)
        await self._caller_stops_ringing()
        ari = self.ctx.ari
        if not st.answered:
            if not await self._scope.request("answer", ari.answer(st.channel_id)):
                # Never leave a call stranded between a buyer and an unanswered caller.
                await self.end_call("normal", "could not answer the caller")
                return
            st.answered = True
            self.ctx.record(st, EventKind.ANSWERED)
        if await self._join(channel_id):
            st.buyer_entered_at = self.ctx.clock()
            st.move(Stage.BRIDGED)
            self.ctx.record(st, EventKind.BRIDGED, leg="buyer", buyer=st.buyer,
                            bridge=st.bridge_id)

    async def bridge_legs(self, channel_id: str) -> bool:
        """Caller and buyer leg of a call moved here from another mode, already talking:
        they meet in the call's bridge; the conference clock runs on from when the buyer
        answered. False when that failed (the call is ending or a leg is gone)."""
        st = self.st
        if not await self._join(channel_id):
            return False
        st.move(Stage.BRIDGED)
        self.ctx.record(st, EventKind.BRIDGED, leg="buyer", buyer=st.buyer, bridge=st.bridge_id,
                        moved=True)
        return True

    async def _join(self, channel_id: str) -> bool:
        """The caller (first time) and this buyer leg into the call's bridge."""
        st, ari = self.st, self.ctx.ari
        try:
            if st.bridge_id is None:
                bridge_id = f"kp-{st.call_id}"
                await ari.create_bridge(bridge_type="mixing,dtmf_events", bridge_id=bridge_id,
                                        name=f"call {st.call_id}")
                st.bridge_id = bridge_id
                await ari.add_channel(bridge_id, st.channel_id,
                                      absorb_dtmf=self.absorbs_digits("caller"))
            await ari.add_channel(st.bridge_id, channel_id,
                                  absorb_dtmf=self.absorbs_digits("buyer"))
        except GONE:
            return False  # a leg hung up meanwhile: its StasisEnd decides what happens next
        except AriError as exc:
            self.ctx.record(st, EventKind.ERROR, leg="buyer", request="bridge", error=str(exc))
            await self._buyer_failed(channel_id, "could not bridge")
            return False
        return True

    def absorbs_digits(self, leg: Leg) -> bool:
        """Whether the leg's digits are kept from the other party (the rule's)."""
        scope = self._scope
        return absorbs_digits(scope.group(live_group(leg, scope.number(), scope.buyer()).group))

    async def _no_buyer(self) -> None:
        st = self.st
        await self._caller_stops_ringing()
        self.ctx.record(st, EventKind.NO_BUYER_AVAILABLE, tried=list(st.tried))
        st.disposition = NO_BUYER
        st.dirty = True
        self.ctx.record(st, EventKind.DISPOSITION, disposition=NO_BUYER)
        router = self._scope.router()
        if router is not None and router.no_buyer_prompt:
            if not st.answered and await self._scope.request("answer",
                                                             self.ctx.ari.answer(st.channel_id)):
                st.answered = True
            playback_id = f"kp-{uuid.uuid4().hex}"
            st.final_playback_id = playback_id
            st.move(Stage.ENDING)
            if await self._scope.request("play", self.ctx.ari.play(st.channel_id,
                                                                   router.no_buyer_prompt,
                                                         playback_id=playback_id)):
                self.ctx.record(st, EventKind.PROMPT_STARTED, media=router.no_buyer_prompt,
                                purpose="no buyer available")
                return
        await self.end_call("normal" if st.answered else "congestion", "no buyer available")

    async def final_prompt_finished(self) -> None:
        self.st.final_playback_id = None
        await self.end_call("normal", "no buyer available")

    # ---- what the caller hears while buyers ring ---------------------------------------

    async def _caller_hears_ringing(self) -> None:
        if self._ringing:
            return
        self._ringing = True
        ari, caller = self.ctx.ari, self.st.channel_id
        if self.ctx.settings.while_dialling == "moh":
            await self._scope.request("start music", ari.start_moh(caller))
        else:
            await self._scope.request("ring", ari.ring(caller))

    async def _caller_stops_ringing(self) -> None:
        if not self._ringing:
            return
        self._ringing = False
        ari, caller = self.ctx.ari, self.st.channel_id
        if self.ctx.settings.while_dialling == "moh":
            await self._scope.request("stop music", ari.stop_moh(caller))
        else:
            await self._scope.request("stop ringing", ari.ring_stop(caller))

    # ---- ending ----------------------------------------------------------------------------

    async def _hangup_leg(self, channel_id: str) -> None:
        await self._scope.request("hangup buyer leg", self.ctx.ari.hangup(channel_id), leg="buyer")

    def _release_leg(self, channel_id: str) -> str | None:
        """Forget a buyer leg: its buyer's live count drops, its events stop reaching the
        call. Returns the buyer, or None if the leg was already released."""
        buyer = self.st.live_buyer_legs.pop(channel_id, None)
        if buyer is not None:
            self.ctx.limits.release(channel_id)
            self._scope.host.detach(channel_id)
            self.st.dirty = True
        return buyer

    async def drop_buyer_legs(self, why: str) -> None:
        """Hang up every live buyer leg."""
        st = self.st
        for channel_id in list(st.live_buyer_legs):
            buyer = self._release_leg(channel_id)
            if channel_id == st.buyer_channel:
                st.buyer_channel = None
                self.ctx.record(st, EventKind.BUYER_DROPPED, leg="buyer", buyer=buyer, reason=why)
            await self._hangup_leg(channel_id)
        st.buyer_entered_at = None

    async def end_call(self, cause: str, why: str) -> None:
        st = self.st
        if st.stage is Stage.ENDED:
            return
        self._scope.timer.cancel()
        st.ended_by = st.ended_by or "daemon"
        st.move(Stage.ENDING)
        self.ctx.record(st, EventKind.HANGUP, requested_by=st.ended_by, reason=why, cause=cause)
        await self.drop_buyer_legs(why)
        await self._scope.request("hangup", self.ctx.ari.hangup(st.channel_id, reason=cause))
        await self._destroy_bridge()

    async def _destroy_bridge(self) -> None:
        st = self.st
        if st.bridge_id is not None:
            bridge_id, st.bridge_id = st.bridge_id, None
            await self._scope.request("destroy bridge", self.ctx.ari.destroy_bridge(bridge_id))

    async def buyer_leg_gone(self, channel_id: str, *, destroyed: bool, cause: int | None = None,
                             cause_txt: str | None = None) -> None:
        """A buyer leg left Stasis (StasisEnd) or was destroyed (ChannelDestroyed)."""
        st = self.st
        if channel_id == st.buyer_channel and st.stage is Stage.ROUTING:
            if not destroyed:
                return  # its ChannelDestroyed follows, with the cause that says why
            status = CAUSE_STATUS.get(cause or 0, cause_txt or "ended before answering")
            await self._buyer_failed(channel_id, status, cause=cause)
            return
        buyer = self._release_leg(channel_id)
        if buyer is None or channel_id != st.buyer_channel:
            return  # a leg we dropped or gave up on
        st.buyer_channel = None
        if st.stage is Stage.BRIDGED:
            self.ctx.record(st, EventKind.BUYER_HANGUP, leg="buyer", buyer=buyer)
            st.ended_by = st.ended_by or "buyer"
            await self.end_call("normal", "the buyer hung up")

    async def caller_gone(self) -> None:
        """The caller's channel left Stasis: clean up every other leg and the bridge."""
        await self._caller_stops_ringing()
        await self.drop_buyer_legs("the caller hung up")
        await self._destroy_bridge()
