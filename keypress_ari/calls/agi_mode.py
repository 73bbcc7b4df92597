"""The FastAGI call mode: calls that ``Dial()`` bridges in the dialplan, whose key presses
reach us as FastAGI requests from a ``features.conf`` applicationmap entry
(``AGI(agi://127.0.0.1:4573/keypress?digit=D&leg=L)``, printed by ``keypress-ari
asterisk features``).

A call is known by its linkedid; the leg that pressed is the one the applicationmap entry's
URL names (``leg=caller``/``leg=buyer``), else the caller when its uniqueid is the linkedid.
The number comes from ``KEYPRESS_NUMBER`` (the features dialplan line sets
``__KEYPRESS_NUMBER=${EXTEN}``), the buyer from ``KEYPRESS_BUYER`` or the buyer whose
endpoint names the callee's channel, the tokens from ``KEYPRESS_TOKEN_<NAME>`` on the
caller's channel, the conference start from ``KEYPRESS_ANSWERED_AT`` on the buyer's leg
(epoch seconds, set by Dial's ``U()``; else the call's first press). The match, the time
limit, the flow and its log rows are the Stasis mode's own (``calls.live``,
``calls.flow_runner``); only the channel port differs (``calls.agi_channel_ops``).

FastAGI sees no hangups: a call left open is closed by :meth:`AgiCalls.sweep` once Asterisk
no longer lists its channels (ARI ``GET /channels`` lists every channel), or after
``idle_close`` seconds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import structlog

from keypress_ari.agi.commands import AgiCommandFailed, AgiCommands
from keypress_ari.agi.server import AgiHangup, AgiSession, AgiTimeout
from keypress_ari.calllog.kinds import EventKind
from keypress_ari.calllog.ops import CallOpened
from keypress_ari.calls import state as call_data
from keypress_ari.calls.agi_channel_ops import AgiChannelOps
from keypress_ari.calls.call import TOKEN_VARIABLE_PREFIX, new_call_id
from keypress_ari.calls.channel_ops import ChannelOpFailed
from keypress_ari.calls.context import CallContext
from keypress_ari.calls.flow_runner import FlowRunner
from keypress_ari.calls.live import LiveControl
from keypress_ari.calls.outside_ops import OutsideOps
from keypress_ari.calls.resync import open_states
from keypress_ari.calls.rules import Leg
from keypress_ari.calls.scope import CallScope, NoHost
from keypress_ari.calls.state import CallState, Stage
from keypress_ari.flows.actions import CallControlAction
from keypress_ari.flows.model import Catalog
from keypress_ari.flows.syntax import KEYS, NO_KEY_PRESS
from keypress_ari.store.port import CallStore

log = structlog.get_logger("keypress.agi")

SCRIPT = "keypress"
_SEP = "|"
_IDENTITY = _SEP.join(("${CHANNEL(linkedid)}", "${BRIDGEPEER}", "${KEYPRESS_NUMBER}",
                       "${KEYPRESS_BUYER}"))
_CALLER = _SEP.join(("${CALLERID(num)}", "${CALLERID(name)}"))




@dataclass(slots=True)
class AgiCall:
    st: CallState
    scope: CallScope
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_press: float = field(default_factory=time.monotonic)
    ended: bool = False


def buyer_for_channel(catalog: Catalog, channel: str) -> str | None:
    """The buyer whose endpoint dialled ``channel`` (``PJSIP/acme-00000004`` was dialled as
    ``PJSIP/acme``; ``Local/x@ctx-0000001;1`` as ``Local/x@ctx``)."""
    base = channel.split(";", 1)[0].rsplit("-", 1)[0]
    for buyer in catalog.buyers:
        endpoint = buyer.endpoint.removesuffix("/n")  # a Local channel without optimisation
        if endpoint == base:
            return buyer.name
    return None


class _Driver:
    """The FastAGI mode's :class:`~keypress_ari.calls.flow_runner.CallDriver`."""

    __slots__ = ("_call", "_ctx", "_ops", "_own")

    def __init__(self, ctx: CallContext, call: AgiCall, ops: AgiChannelOps, own: str) -> None:
        self._ctx, self._call, self._ops, self._own = ctx, call, ops, own

    async def end_call(self, cause: str, why: str) -> None:
        st = self._call.st
        if self._call.ended:
            return
        st.ended_by = "daemon"
        st.move(Stage.ENDING)
        self._ctx.record(st, EventKind.HANGUP, requested_by="daemon", reason=why, cause=cause)
        legs = [leg for leg in (st.buyer_channel, st.channel_id) if leg and leg != self._own]
        for channel in [*legs, self._own]:  # the pressing channel last: it carries the AGI
            await self._ops.hangup(channel)
        self._call.ended = True

    async def continue_routing(self, reason: str, flow: str | None) -> None:
        self._ctx.record(self._call.st, EventKind.ERROR, request="continue routing",
                         error="fastagi mode cannot continue routing (the Stasis app dials "
                               "buyers)", flow=flow)


class _NoDriver:
    """An operator's single control action never ends the call or routes it."""

    async def end_call(self, cause: str, why: str) -> None:
        raise AssertionError("an operator's control action does not end the call")

    async def continue_routing(self, reason: str, flow: str | None) -> None:
        raise AssertionError("an operator's control action does not route the call")


class AgiCalls:
    """The FastAGI mode's calls, by linkedid, and the handler the AGI server runs."""

    def __init__(self, ctx: CallContext, *, idle_close: float = 4 * 3600.0) -> None:
        self._ctx = ctx
        self._calls: dict[str, AgiCall] = {}
        self._opening: dict[str, asyncio.Future[AgiCall]] = {}  # first press still reading
        self._idle_close = idle_close
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    def call(self, linkedid: str) -> AgiCall | None:
        return self._calls.get(linkedid)

    async def handle(self, session: AgiSession) -> None:
        request = session.request
        digit = request.params.get("digit") or (request.args[0] if request.args else "")
        if request.script != SCRIPT or digit not in KEYS or digit == NO_KEY_PRESS:
            log.warning("FastAGI request we do not serve", script=request.script,
                        digit=digit[:8], channel=request.channel)
            return
        agi = AgiCommands(session)
        identity = (await agi.evaluate(_IDENTITY) or "").split(_SEP)
        linkedid, peer, number, buyer = [*identity, "", "", "", ""][:4]
        linkedid = linkedid or request.uniqueid
        said = request.params.get("leg")
        leg: Leg = (said if said in ("caller", "buyer")  # type: ignore[assignment]
                    else "caller" if request.uniqueid == linkedid else "buyer")
        call = self._calls.get(linkedid)
        if call is None and linkedid in self._opening:
            call = await asyncio.shield(self._opening[linkedid])  # both legs pressed at once
        if call is None:
            opening = self._opening[linkedid] = asyncio.get_running_loop().create_future()
            try:
                call = await self._open(agi, request.channel, peer, leg, linkedid,
                                        number or request.params.get("number", "")
                                        or (request.env.get("extension", "")
                                            if leg == "caller" else ""),
                                        buyer or request.params.get("buyer", ""))
                opening.set_result(call)
            except Exception as exc:
                opening.set_exception(exc)
                opening.exception()  # retrieved: a waiter may not exist
                raise
            finally:
                del self._opening[linkedid]
                if not opening.done():
                    opening.cancel()  # cancelled itself
        async with call.lock:
            if call.ended:
                return
            call.last_press = time.monotonic()
            await self._press(call, agi, request.channel, leg, digit)

    async def _open(self, agi: AgiCommands, own: str, peer: str, leg: Leg, linkedid: str,
                    number: str, buyer_name: str) -> AgiCall:
        ctx = self._ctx
        catalog = ctx.catalog.current
        caller_chan, buyer_chan = (own, peer) if leg == "caller" else (peer, own)
        caller = (await agi.evaluate(_CALLER, caller_chan or None) or "").split(_SEP, 1)
        caller_number, caller_name = [*caller, "", ""][:2]
        answered_at = (await agi.variable("KEYPRESS_ANSWERED_AT", buyer_chan or None)
                       if buyer_chan else None)
        st = CallState(call_id=new_call_id(), channel_id=caller_chan or own, mode="fastagi",
                       linkedid=linkedid, owner=ctx.owner, number=number,
                       caller_number=caller_number)
        found = catalog.number(number)
        st.router = found.router if found else None
        st.buyer = buyer_name or (buyer_for_channel(catalog, buyer_chan) if buyer_chan else None)
        st.buyer_channel = buyer_chan or None
        st.legs = {"caller": st.channel_id, **({"buyer": buyer_chan} if buyer_chan else {})}
        st.move(Stage.BRIDGED)
        try:
            st.buyer_entered_at = float(answered_at) if answered_at else None
        except ValueError:
            st.buyer_entered_at = None
        entered_from = "KEYPRESS_ANSWERED_AT" if st.buyer_entered_at else "first press"
        st.buyer_entered_at = st.buyer_entered_at or ctx.clock()
        st.data.update({call_data.CALLER_NUMBER: caller_number,
                        call_data.CALLER_NAME: caller_name, call_data.DIALLED_NUMBER: number,
                        call_data.NUMBER: number, call_data.ROUTER: st.router or "",
                        call_data.BUYER: st.buyer or ""})
        call = AgiCall(st, CallScope(ctx, st, NoHost()))
        self._calls[linkedid] = call
        ctx.emit(CallOpened(st.call_id, number, caller_number, st.router, st.channel_id,
                            st.stage.value, st.started_at))
        ctx.record(st, EventKind.CALL_STARTED, mode="fastagi", linkedid=linkedid,
                   channel=st.channel_id, buyer_channel=buyer_chan, buyer=st.buyer,
                   caller_name=caller_name, conference_from=entered_from)
        tokens = await self._tokens(agi, caller_chan)
        if tokens:
            st.set_tokens(tokens)
            ctx.record(st, EventKind.TOKENS_SET, source="call", tokens=tokens)
        ctx.persist(st)
        return call

    async def _tokens(self, agi: AgiCommands, channel: str) -> dict[str, str]:
        tokens: dict[str, str] = {}
        for name in sorted(self._ctx.catalog.current.referenced_tokens()):
            value = await agi.variable(TOKEN_VARIABLE_PREFIX + name.upper(), channel or None)
            if value is not None:
                tokens[name] = value
        return tokens

    async def _press(self, call: AgiCall, agi: AgiCommands, own: str, leg: Leg,
                     digit: str) -> None:
        ctx, st = self._ctx, call.st
        ops = AgiChannelOps(agi, own)
        driver = _Driver(ctx, call, ops, own)
        live = LiveControl(call.scope, FlowRunner(call.scope, ops, driver), ops,
                           digits_absorbed=False)
        group = live.group(leg)
        if group is not None and "fastagi" not in group.modes:
            ctx.record(st, EventKind.KEY_PRESS, leg=leg, digit=digit, matched=False,
                       reason=f"flow group {group.name} does not list fastagi in its modes")
            return
        before = dict(st.tokens)
        try:
            await live.digit(leg, digit, 0)
            for name, value in st.tokens.items():
                if before.get(name) != value and not call.ended:
                    await ops.set_variable(TOKEN_VARIABLE_PREFIX + name.upper(), value)
        except (AgiHangup, AgiTimeout, AgiCommandFailed) as exc:
            ctx.record(st, EventKind.ERROR, leg=leg, request="fastagi", error=str(exc))
        if call.ended:
            self._close(call, "daemon", "ended by a flow")
        elif st.dirty:
            ctx.persist(st)

    def operator_action(self, call_id: str, action: str, ops: OutsideOps,
                        by: str = "console") -> bool:
        """An operator's action on one of this mode's calls between its presses, through
        ``ops`` (AMI when configured, else ARI, which can only hang up a channel outside its
        app); in order with the call's presses. False: no such live call here."""
        call = next((c for c in self._calls.values()
                     if c.st.call_id == call_id and not c.ended), None)
        if call is None:
            return False
        task = asyncio.get_running_loop().create_task(self._operate(call, action, ops, by))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _operate(self, call: AgiCall, action: str, ops: OutsideOps, by: str) -> None:
        ctx, st = self._ctx, call.st
        async with call.lock:
            if call.ended:
                return
            ctx.record(st, EventKind.OPERATOR_ACTION, action=action, by=by)
            if action != "hangup":
                runner = FlowRunner(call.scope, ops, _NoDriver())
                await runner.control(CallControlAction(kind=action), f"operator ({by})",
                                     "operator")
                return
            why = f"hung up by an operator ({by})"
            st.ended_by = "daemon"
            st.move(Stage.ENDING)
            ctx.record(st, EventKind.HANGUP, requested_by="operator", reason=why,
                       cause="normal")
            for channel in (st.buyer_channel, st.channel_id):
                if channel:
                    try:
                        await ops.hangup(channel)
                    except ChannelOpFailed as exc:
                        ctx.record(st, EventKind.ERROR, request="hangup", error=str(exc))
            self._close(call, "daemon", why)

    def _close(self, call: AgiCall, ended_by: str, reason: str) -> None:
        st = call.st
        call.ended = True
        self._calls.pop(st.linkedid or "", None)
        was = st.stage.value
        st.move(Stage.ENDED)
        self._ctx.record(st, EventKind.CALL_ENDED, ended_by=ended_by, stage=was, reason=reason)
        self._ctx.persist(st, ended_by=ended_by, end_reason=reason)

    def sweep(self, live_channels: set[str] | None, now: float | None = None) -> int:
        """Close the calls whose channels Asterisk no longer lists (``live_channels``: every
        channel name; None when unknown) or that saw no press for ``idle_close`` s."""
        now = time.monotonic() if now is None else now
        closed = 0
        for call in list(self._calls.values()):
            if call.lock.locked():
                continue
            legs = [leg for leg in (call.st.channel_id, call.st.buyer_channel) if leg]
            if live_channels is not None and not any(leg in live_channels for leg in legs):
                self._close(call, "unknown", "its channels are gone (fastagi sees no hangups)")
            elif now - call.last_press > self._idle_close:
                self._close(call, "unknown", f"no press for {self._idle_close:g} s")
            else:
                continue
            closed += 1
        return closed

    async def run_sweeper(self, interval: float = 30.0) -> None:
        """Every ``interval`` s, close the calls Asterisk no longer has (ARI lists them)."""
        while True:
            await asyncio.sleep(interval)
            names: set[str] | None
            try:
                names = {c.name for c in await self._ctx.ari.list_channels()}
            except Exception as exc:  # ARI away: only the idle limit applies this round
                log.warning("fastagi sweep could not list channels", error=str(exc))
                names = None
            self.sweep(names)

    async def adopt(self, store: CallStore) -> int:
        """A restarted daemon takes back its open fastagi calls (their snapshots)."""
        states = await open_states(store, "fastagi", self._ctx.owner)
        for st in states:
            assert st.linkedid is not None
            self._calls[st.linkedid] = AgiCall(st, CallScope(self._ctx, st, NoHost()))
        return len(states)
