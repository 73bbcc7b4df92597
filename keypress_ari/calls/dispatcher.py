"""Routes events to calls: channel id -> Call, each call's events handled in order.

Calls never wait for each other: each has its own small queue, drained by a task that
exists only while the call has events pending. The stream callback only appends and, if
needed, starts that task; it never awaits.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from collections.abc import Callable

import structlog

from keypress_ari.ari import events as ev
from keypress_ari.calllog.kinds import EventKind
from keypress_ari.calls.call import Call, new_call_id
from keypress_ari.calls.context import CallContext
from keypress_ari.calls.handover import HandedOver, Handover, OperatorAction
from keypress_ari.calls.resync import ChannelVanished, Resumed
from keypress_ari.calls.scope import TimerFired
from keypress_ari.calls.state import CallState
from keypress_ari.calls.timing import DtmfLatency

log = structlog.get_logger("keypress.dispatcher")


class _Slot:
    """A call and its pending events."""

    __slots__ = ("call", "context", "draining", "pending")

    def __init__(self, call: Call) -> None:
        self.call = call
        self.pending: deque[tuple[object, float]] = deque()  # (event, arrival perf_counter)
        self.draining = False
        # The context the call's drain tasks run in: every log line of its handling (and
        # of tasks it starts) names the call and its caller channel. Bound once per call,
        # not per event; only one drain task of a call runs at a time.
        self.context: contextvars.Context | None = None

    def drain_context(self) -> contextvars.Context:
        context = self.context
        if context is None:
            context = self.context = contextvars.Context()
            context.run(structlog.contextvars.bind_contextvars, call_id=self.call.st.call_id,
                        channel_id=self.call.st.channel_id)
        return context


_OWN_EVENTS = (TimerFired, ChannelVanished, Resumed, HandedOver, OperatorAction)


def channel_of(event: object) -> str | None:
    """The channel an event concerns (the call's own timers included)."""
    if isinstance(event, _OWN_EVENTS):
        return event.channel_id
    return ev.channel_id_of(event)  # type: ignore[arg-type]  # any other object: None


class Dispatcher:
    def __init__(self, ctx: CallContext,
                 arrival_clock: Callable[[], float] = time.perf_counter) -> None:
        """``arrival_clock``: when the event being delivered arrived (the stream's frame
        time, ``perf_counter``); key press latency is measured from it."""
        self.ctx = ctx
        self._slots: dict[str, _Slot] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepting = True
        self.arrival_clock = arrival_clock
        self._handovers: dict[str, Handover] = {}  # channel id -> a call on its way in
        # Where the calls' own events (timers, vanished channels, ...) enter: the core points
        # it at its gate, so that they wait with the ARI events while the lease is in doubt.
        self.inbox: Callable[[object], None] = self.on_event

    @property
    def active_calls(self) -> int:
        return len({id(slot) for slot in self._slots.values()})

    def calls(self) -> list[Call]:
        seen: dict[int, Call] = {}
        for slot in self._slots.values():
            seen.setdefault(id(slot), slot.call)
        return list(seen.values())

    def on_event(self, event: object) -> None:
        """The stream's callback: find (or open) the call and queue the event for it."""
        channel_id = channel_of(event)
        if channel_id is None:
            return
        slot = self._slots.get(channel_id)
        if isinstance(event, ev.StasisStart) and channel_id in self._handovers:
            slot, event = self._handed_over(channel_id), HandedOver(channel_id)
        if slot is None:
            if not isinstance(event, ev.StasisStart) or not self.accepting:
                return
            state = CallState(call_id=new_call_id(), channel_id=channel_id,
                              owner=self.ctx.owner)
            slot = _Slot(Call(self.ctx, state, self))
            self._slots[channel_id] = slot
        slot.pending.append((event, self.arrival_clock()))
        if not slot.draining:
            slot.draining = True
            task = asyncio.get_running_loop().create_task(self._drain(channel_id, slot),
                                                          context=slot.drain_context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def holds(self, channel_id: str) -> bool:
        """Whether one of this dispatcher's calls has this channel, or will have it (the ami
        mode leaves those to the Stasis mode)."""
        return channel_id in self._slots or channel_id in self._handovers

    def operator_action(self, call_id: str, action: str, by: str = "console") -> bool:
        """Act on a call for an operator (``handover.OPERATOR_ACTIONS``), through the call's
        own handling, in order with its other events, logged as an operator action.
        False: no such live call here."""
        for call in self.calls():
            if call.st.call_id == call_id and not call.ended:
                self.on_event(OperatorAction(call.st.channel_id, action, by))
                return True
        return False

    def expect_handover(self, handover: Handover) -> None:
        """A call of another mode is being redirected into the Stasis app: its legs'
        StasisStart events become :class:`HandedOver` for one call with its state."""
        for channel_id in handover.channels():
            self._handovers[channel_id] = handover

    def cancel_handover(self, handover: Handover) -> None:
        """The redirect failed: the call stays where it was."""
        for channel_id in handover.channels():
            if self._handovers.get(channel_id) is handover:
                del self._handovers[channel_id]

    def _handed_over(self, channel_id: str) -> _Slot:
        handover = self._handovers.pop(channel_id)
        slot = self._slots.get(handover.caller)
        if slot is None:
            call = Call(self.ctx, handover.state, self)
            call.handover = handover
            slot = _Slot(call)
            for leg, buyer in [(handover.caller, None), *handover.state.live_buyer_legs.items()]:
                self._slots[leg] = slot
                if buyer is not None:
                    self.ctx.limits.hold(buyer, leg)
        return slot

    def adopt(self, state: CallState) -> Call:
        """Take over a call from its persisted state (a restarted daemon); it resumes at once."""
        call = Call(self.ctx, state, self)
        slot = _Slot(call)
        self._slots[state.channel_id] = slot
        for channel_id, buyer in state.live_buyer_legs.items():
            self._slots[channel_id] = slot
            self.ctx.limits.hold(buyer, channel_id)
        self.on_event(Resumed(state.channel_id, adopted=True))
        return call

    # ---- CallHost: what calls ask of their dispatcher -----------------------------------

    def post(self, event: object) -> None:
        self.inbox(event)

    def attach(self, channel_id: str, caller_channel: str) -> None:
        slot = self._slots.get(caller_channel)
        if slot is not None:
            self._slots[channel_id] = slot

    def detach(self, channel_id: str) -> None:
        slot = self._slots.get(channel_id)
        if slot is not None and slot.call.st.channel_id != channel_id:
            del self._slots[channel_id]

    async def _drain(self, channel_id: str, slot: _Slot) -> None:
        call = slot.call
        try:
            while slot.pending:
                event, arrived = slot.pending.popleft()
                is_digit = isinstance(event, ev.ChannelDtmfReceived)
                if is_digit:
                    DtmfLatency.mark(arrived)
                try:
                    await call.handle(event)
                except Exception:
                    log.exception("error handling an event", event_type=type(event).__name__)
                    call.ctx.record(call.st, EventKind.ERROR,
                                    request="handle " + type(event).__name__,
                                    error="internal error, see the daemon log")
                if is_digit:
                    DtmfLatency.clear()
        finally:
            slot.draining = False
            if call.ended:
                for leg in [*list(call.st.legs.values()), channel_id]:
                    if self._slots.get(leg) is slot:
                        del self._slots[leg]

    async def idle(self, timeout: float) -> bool:
        """Wait until no call has events being handled (used when stopping)."""
        try:
            async with asyncio.timeout(timeout):
                while self._tasks:
                    await asyncio.gather(*list(self._tasks), return_exceptions=True)
        except TimeoutError:
            return False
        return True
