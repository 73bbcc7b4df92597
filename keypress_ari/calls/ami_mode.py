"""The ami call mode: key press flows on calls the dialplan bridges with ``Dial()``, with no
dialplan change. AMI ``DTMFEnd`` events (``ami.tracker``) are the presses; AMI actions act
(``AmiChannelOps``: MuteAudio, Hangup, Setvar). The match, the time limit, the flow and its
log rows are the Stasis mode's own (``calls.live``, ``calls.flow_runner``).

A call is served when its number (the caller's extension at ``DialBegin``, or
``KEYPRESS_NUMBER``) has key press controls or its buyer (the callee's channel against the
buyers' endpoints) forwards to an external agent, and the group lists ``ami`` in its modes.
Calls the daemon holds in its Stasis app are left to the Stasis mode. Events of one call are
handled in order (one lock per call, FIFO); calls never wait for each other.

What AMI cannot do (hold, play, continue routing: ``handover.needs_stasis``) moves the call
into the Stasis app: one AMI ``Redirect`` sends both legs to the handover context, whose
``Stasis()`` hands them to the dispatcher, and the Stasis mode carries the call from then on
with the same call id and call log (``calls.handover``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import structlog

from keypress_ari.ami.client import AmiClient, AmiError
from keypress_ari.ami.protocol import AmiMessage
from keypress_ari.ami.tracker import (
    FOLLOWED_EVENTS,
    CallGone,
    CallTracker,
    DigitPressed,
    Leg,
    NativeBridge,
)
from keypress_ari.calllog.kinds import EventKind
from keypress_ari.calllog.ops import CallOpened
from keypress_ari.calls import state as call_data
from keypress_ari.calls.agi_mode import buyer_for_channel
from keypress_ari.calls.ami_channel_ops import AmiChannelOps
from keypress_ari.calls.call import TOKEN_VARIABLE_PREFIX, new_call_id
from keypress_ari.calls.channel_ops import ChannelOpFailed
from keypress_ari.calls.context import CallContext
from keypress_ari.calls.flow_runner import FlowRunner
from keypress_ari.calls.handover import (
    STASIS_ONLY_ACTIONS,
    Handover,
    StasisDoor,
    needs_stasis,
    to_stasis,
)
from keypress_ari.calls.live import LiveControl
from keypress_ari.calls.resync import open_states
from keypress_ari.calls.scope import CallScope, NoHost
from keypress_ari.calls.state import CallState, Stage
from keypress_ari.flows.actions import CallControlAction
from keypress_ari.store.port import CallStore

log = structlog.get_logger("keypress.ami")


@dataclass(slots=True)
class AmiCall:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    st: CallState | None = None    # None until its first press opened it
    ignored: bool = False          # not a call we serve
    ended: bool = False
    moved: bool = False            # handed over to the Stasis mode, which ends it


class _Driver:
    __slots__ = ("_call", "_ctx", "_ops")

    def __init__(self, ctx: CallContext, call: AmiCall, ops: AmiChannelOps) -> None:
        self._ctx, self._call, self._ops = ctx, call, ops

    async def end_call(self, cause: str, why: str) -> None:
        st = self._call.st
        assert st is not None
        st.ended_by = "daemon"
        st.move(Stage.ENDING)
        self._ctx.record(st, EventKind.HANGUP, requested_by="daemon", reason=why, cause=cause)
        for channel in (st.buyer_channel, st.channel_id):
            if channel:
                try:
                    await self._ops.hangup(channel)
                except ChannelOpFailed as exc:
                    self._ctx.record(st, EventKind.ERROR, request="hangup", error=str(exc))
        self._call.ended = True

    async def continue_routing(self, reason: str, flow: str | None) -> None:
        # Unreachable: a continue-routing flow moves the call into Stasis first (_press).
        assert self._call.st is not None
        self._ctx.record(self._call.st, EventKind.ERROR, request="continue routing",
                         error="continue routing needs the call in the Stasis app", flow=flow)


class AmiCalls:
    def __init__(self, ctx: CallContext, ami: AmiClient, stasis: StasisDoor,
                 handover_context: str = "keypress-handover") -> None:
        self._ctx, self._ami, self._ops = ctx, ami, AmiChannelOps(ami)
        self._stasis, self._handover_context = stasis, handover_context
        self.tracker = CallTracker()
        self._calls: dict[str, AmiCall] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.native_bridges = 0
        self.native_rtp_loaded: bool | None = None  # checked at each AMI login
        self.handover_missing: str | None = None  # the handover context's flaw, if seen
        self.events_filtered: bool | None = None  # the session filter took (each login)

    @property
    def active_calls(self) -> int:
        return sum(1 for c in self._calls.values() if c.st is not None and not c.ended)

    def call_state(self, linkedid: str) -> CallState | None:
        call = self._calls.get(linkedid)
        return call.st if call is not None else None

    def on_event(self, message: AmiMessage) -> None:
        """The AMI client's callback: never blocks; a press becomes a task of its call."""
        if message.get("Event") == "CoreShowChannelsComplete":
            self._close_vanished()
            return
        seen = self.tracker.feed(message)
        if isinstance(seen, DigitPressed):
            if self._stasis.holds(seen.uniqueid):
                return  # the Stasis mode's call
            call = self._calls.setdefault(seen.linkedid, AmiCall())
            if call.ignored or call.ended:
                return
            task = asyncio.get_running_loop().create_task(self._press(call, seen))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif isinstance(seen, NativeBridge):
            self.native_bridges += 1
            log.warning("native RTP bridge: key presses on it are invisible", detail=seen.warning)
        elif isinstance(seen, CallGone):
            gone = self._calls.pop(seen.linkedid, None)
            if gone is not None and gone.st is not None and not (gone.ended or gone.moved):
                self._close(gone.st, "unknown", "its channels hung up")

    async def adopt(self, store: CallStore) -> int:
        """A restarted daemon takes back its open ami calls (their snapshots); their legs are
        found again by :meth:`resync` once AMI is up."""
        states = await open_states(store, "ami", self._ctx.owner)
        for st in states:
            assert st.linkedid is not None
            self._calls[st.linkedid] = AmiCall(st=st)
            self.tracker.expect(st.linkedid, st.channel_id, st.buyer_channel or "", st.number,
                                st.buyer_entered_at)
        return len(states)

    async def resync(self) -> None:
        """After each AMI login: list the live channels (their ``CoreShowChannel`` events
        feed the tracker); :meth:`on_event` closes the calls left without channels when the
        list completes."""
        await self._filter_events()
        self.tracker.begin_listing()
        try:
            await self._ami.action("CoreShowChannels")
        except AmiError as exc:
            self.tracker.end_listing()  # nothing listed: forget nothing
            log.warning("AMI channel list failed", error=str(exc))
        try:
            reply = await self._ami.action("Command", Command="module show like bridge_native_rtp")
        except AmiError as exc:  # the user may lack the command class: not fatal
            log.info("AMI could not check bridge_native_rtp", error=str(exc))
            return
        self.native_rtp_loaded = "bridge_native_rtp.so" in reply.get("Output", "")
        if self.native_rtp_loaded:
            log.warning("bridge_native_rtp is loaded: calls Asterisk bridges natively deliver no "
                        "DTMF events to the ami mode; set any DYNAMIC_FEATURES value before "
                        "Dial() or noload => bridge_native_rtp.so")
        await self._check_handover_context()

    async def _filter_events(self) -> None:
        """Ask Asterisk for the followed events only (a busy PBX sends dozens of others per
        call: Newexten, VarSet, Newstate...). Without the system permission the session
        stays unfiltered, which costs CPU, not correctness."""
        for name in FOLLOWED_EVENTS:
            try:
                await self._ami.action("Filter", Operation="Add", MatchCriteria=f"name({name})")
            except AmiError as exc:
                self.events_filtered = False
                log.info("AMI event filter refused: every event of the login's classes "
                         "will arrive", error=str(exc))
                return
        self.events_filtered = True

    async def _check_handover_context(self) -> None:
        """Whether the dialplan has the handover context (a redirect to a missing extension
        would hang the call up); a press that needs it is refused while it is missing."""
        context, missing = self._handover_context, []
        for exten in ("caller", "buyer"):
            try:
                reply = await self._ami.action("Command",
                                               Command=f"dialplan show {exten}@{context}")
                output = reply.get("Output", "")
            except AmiError as exc:
                if "Command output follows" not in str(exc):  # not "the command failed"
                    log.info("AMI could not check the handover context", error=str(exc))
                    return
                output = ""  # the CLI found no such extension
            if "Stasis(" not in output:
                missing.append(f"{exten}@{context}")
        self.handover_missing = (
            f"the dialplan has no Stasis() at {', '.join(missing)} (config [ami] "
            "handover_context; see asterisk/examples/plain-dial.conf)" if missing else None)
        if self.handover_missing:
            log.warning("hold, play and continue routing are off for ami calls",
                        why=self.handover_missing)

    def _close_vanished(self) -> None:
        """The channel list after a login is complete: close the calls it did not show."""
        self.tracker.end_listing()
        for linkedid, call in list(self._calls.items()):
            if self.tracker.has_channels(linkedid):
                continue
            del self._calls[linkedid]
            self.tracker.forget(linkedid)
            if call.st is not None and not (call.ended or call.moved):
                self._close(call.st, "unknown", "its channels are gone (seen at AMI login)")

    async def idle(self, timeout: float) -> None:
        """Wait for the presses being handled (tests, stop)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def _press(self, call: AmiCall, d: DigitPressed) -> None:
        async with call.lock:
            if call.ended or call.ignored:
                return
            if call.st is None:
                call.st = await self._open(d)
                if call.st is None:
                    call.ignored = True
                    return
            st = call.st
            scope = CallScope(self._ctx, st, NoHost())
            driver = _Driver(self._ctx, call, self._ops)
            live = LiveControl(scope, FlowRunner(scope, self._ops, driver), self._ops,
                               digits_absorbed=False)
            group = live.group(d.leg)
            if group is not None and "ami" not in group.modes:
                self._ctx.record(st, EventKind.KEY_PRESS, leg=d.leg, digit=d.digit,
                                 duration_ms=d.duration_ms, matched=False,
                                 reason=f"flow group {group.name} does not list ami in its modes")
                return
            flow = live.would_run(d.leg, d.digit)
            reason = needs_stasis(flow) if flow is not None else None
            if reason is not None:
                await self._hand_over(call, reason, d.caller_uniqueid, d.buyer_uniqueid,
                                      leg=d.leg, digit=d.digit, duration_ms=d.duration_ms)
                return
            before = dict(st.tokens)
            await live.digit(d.leg, d.digit, d.duration_ms)
            for name, value in st.tokens.items():
                if before.get(name) != value and not call.ended:
                    try:
                        await self._ops.set_variable(st.channel_id,
                                                     TOKEN_VARIABLE_PREFIX + name.upper(), value)
                    except ChannelOpFailed as exc:
                        self._ctx.record(st, EventKind.ERROR, request="setvar", error=str(exc))
            if call.ended:
                self._close(st, "daemon", "ended by a flow")
            elif st.dirty:
                self._ctx.persist(st)

    def operator_action(self, call_id: str, action: str, by: str = "console") -> bool:
        """An operator's action (``handover.OPERATOR_ACTIONS``) on one of this mode's calls,
        in order with its presses; hold and unhold move the call into the Stasis app first.
        False: no such live call here."""
        call = next((c for c in self._calls.values() if c.st is not None
                     and c.st.call_id == call_id and not (c.ended or c.moved)), None)
        if call is None:
            return False
        task = asyncio.get_running_loop().create_task(self._operate(call, action, by))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _operate(self, call: AmiCall, action: str, by: str) -> None:
        async with call.lock:
            st = call.st
            if st is None or call.ended or call.moved:
                return
            if action in STASIS_ONLY_ACTIONS:
                caller_uid, buyer_uid = self.tracker.legs(st.linkedid or "")
                if caller_uid is None:
                    self._ctx.record(st, EventKind.OPERATOR_ACTION, action=action, by=by,
                                     outcome="failed", error="the caller's channel is gone")
                    return
                await self._hand_over(call, f"operator {action}", caller_uid, buyer_uid or "",
                                      leg="caller", digit="", duration_ms=0, action=action,
                                      by=by)
                return
            self._ctx.record(st, EventKind.OPERATOR_ACTION, action=action, by=by)
            driver = _Driver(self._ctx, call, self._ops)
            if action == "hangup":
                await driver.end_call("normal", f"hung up by an operator ({by})")
                self._close(st, "daemon", f"hung up by an operator ({by})")
                return
            runner = FlowRunner(CallScope(self._ctx, st, NoHost()), self._ops, driver)
            await runner.control(CallControlAction(kind=action), f"operator ({by})", "operator")
            if st.dirty:
                self._ctx.persist(st)

    async def _hand_over(self, call: AmiCall, reason: str, caller_uid: str, buyer_uid: str,
                         *, leg: Leg, digit: str, duration_ms: int, action: str | None = None,
                         by: str = "console") -> None:
        """Redirect both legs into the Stasis app, which handles this press, or runs the
        operator's ``action`` (``reason`` is what needs it there). Should the redirect
        fail, the call stays an ami call."""
        st = call.st
        assert st is not None
        ctx = self._ctx
        if self.handover_missing:
            why = f"{reason} needs the call in the Stasis app, but {self.handover_missing}"
            if action is not None:
                ctx.record(st, EventKind.OPERATOR_ACTION, action=action, by=by,
                           outcome="failed", error=why)
            else:
                ctx.record(st, EventKind.KEY_PRESS, leg=leg, digit=digit,
                           duration_ms=duration_ms, matched=True, ignored=True, reason=why)
            ctx.persist(st)
            return
        ctx.record(st, EventKind.MOVING_TO_STASIS, leg=leg, digit=digit or None, reason=reason,
                   context=self._handover_context)
        saved = st.snapshot()
        caller_name, buyer_name = st.channel_id, st.buyer_channel
        buyer = buyer_uid if buyer_name and buyer_uid else None
        to_stasis(st, caller_uid, buyer)
        handover = Handover(st, caller_uid, buyer, leg, digit, duration_ms, action=action,
                            by=by)
        self._stasis.expect_handover(handover)
        call.moved = True
        fields = {"Channel": caller_name, "Context": self._handover_context,
                  "Exten": "caller", "Priority": "1"}
        if buyer_name:
            fields.update(ExtraChannel=buyer_name, ExtraContext=self._handover_context,
                          ExtraExten="buyer", ExtraPriority="1")
        try:
            await self._ami.action("Redirect", **fields)
        except AmiError as exc:
            self._stasis.cancel_handover(handover)
            call.moved = False
            restored = CallState.from_snapshot(saved)
            restored.seq = st.seq
            call.st = restored
            ctx.record(restored, EventKind.ERROR, request="redirect into stasis",
                       error=str(exc))
            ctx.persist(restored)
            return
        ctx.persist(st)  # a Stasis call's state from now on

    async def _open(self, d: DigitPressed) -> CallState | None:
        ctx = self._ctx
        catalog = ctx.catalog.current
        number = await self._ops.variable(d.caller_channel, "KEYPRESS_NUMBER") or d.number
        found = catalog.number(number)
        buyer = buyer_for_channel(catalog, d.buyer_channel) if d.buyer_channel else None
        buyer_obj = catalog.buyer(buyer) if buyer else None
        groups = [catalog.flow_group(g.flow_group) for g, on in (
            (found, found is not None and found.keypress_controls),
            (buyer_obj, buyer_obj is not None and buyer_obj.forwards_to_external_agent))
            if on and g is not None and g.flow_group is not None]
        if not any(g is not None and "ami" in g.modes for g in groups):
            # not ours, or another mode's (a fastagi call's keys are AMI events too)
            log.debug("AMI press on a call we do not serve", number=number, buyer=buyer)
            return None
        st = CallState(call_id=new_call_id(), channel_id=d.caller_channel, mode="ami",
                       linkedid=d.linkedid, number=number, caller_number=d.caller_number,
                       owner=self._ctx.owner)
        st.router = found.router if found else None
        st.buyer, st.buyer_channel = buyer, d.buyer_channel or None
        st.legs = {"caller": d.caller_channel, "buyer": d.buyer_channel}
        st.move(Stage.BRIDGED)
        st.buyer_entered_at = d.answered_at or ctx.clock()
        st.data.update({call_data.CALLER_NUMBER: d.caller_number,
                        call_data.CALLER_NAME: d.caller_name, call_data.DIALLED_NUMBER: number,
                        call_data.NUMBER: number, call_data.ROUTER: st.router or "",
                        call_data.BUYER: buyer or ""})
        ctx.emit(CallOpened(st.call_id, number, d.caller_number, st.router, st.channel_id,
                            st.stage.value, st.started_at))
        ctx.record(st, EventKind.CALL_STARTED, mode="ami", linkedid=d.linkedid,
                   channel=d.caller_channel, buyer_channel=d.buyer_channel, buyer=buyer,
                   caller_name=d.caller_name,
                   conference_from="DialEnd" if d.answered_at else "first press")
        tokens: dict[str, str] = {}
        for name in sorted(catalog.referenced_tokens()):
            value = await self._ops.variable(d.caller_channel,
                                             TOKEN_VARIABLE_PREFIX + name.upper())
            if value is not None:
                tokens[name] = value
        if tokens:
            st.set_tokens(tokens)
            ctx.record(st, EventKind.TOKENS_SET, source="call", tokens=tokens)
        ctx.persist(st)
        return st

    def _close(self, st: CallState, ended_by: str, reason: str) -> None:
        was = st.stage.value
        st.move(Stage.ENDED)
        self._ctx.record(st, EventKind.CALL_ENDED, ended_by=ended_by, stage=was, reason=reason)
        self._ctx.persist(st, ended_by=ended_by, end_reason=reason)
