"""What each part of a call may touch: its state, the shared services, its one timer.

A :class:`~keypress_ari.calls.call.Call` builds one :class:`CallScope` and hands it to each
of its parts (``prompting``, ``dialing``, ``live``, ``flow_runner``); a part reaches other
parts only through what it was given when built, never through the call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from keypress_ari.ari.errors import AriConflict, AriError, AriNotFound
from keypress_ari.calllog.kinds import EventKind
from keypress_ari.calls.context import CallContext
from keypress_ari.calls.state import CallState
from keypress_ari.flows.model import Buyer, FlowGroup, Number, Router

log = structlog.get_logger("keypress.call")

GONE = (AriNotFound, AriConflict)


class CallHost(Protocol):
    """What a call needs from the dispatcher that owns it."""

    def post(self, event: object) -> None:
        """Queue an event for this call (timers use it)."""

    def attach(self, channel_id: str, caller_channel: str) -> None:
        """Route this channel's events to the call of ``caller_channel`` (before the channel
        exists)."""

    def detach(self, channel_id: str) -> None:
        """Stop routing this channel's events."""


class NoHost:
    """The host of a call mode without timers or routed events (fastagi, ami)."""

    def post(self, event: object) -> None: ...
    def attach(self, channel_id: str, caller_channel: str) -> None: ...
    def detach(self, channel_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A call's timer; stale when its generation is not the call's current one."""

    channel_id: str
    generation: int


class CallTimer:
    """The call's one timer (the press-1 timeout or a dial's deadline). Firing posts a
    :class:`TimerFired` to the call's own queue; a restart or cancel makes it stale."""

    __slots__ = ("_handle", "_host", "_st")

    def __init__(self, st: CallState, host: CallHost) -> None:
        self._st, self._host = st, host
        self._handle: asyncio.TimerHandle | None = None

    def start(self, seconds: float, deadline: float) -> None:
        st = self._st
        st.timer_generation += 1
        st.deadline = deadline
        self._handle = asyncio.get_running_loop().call_later(
            seconds, self._host.post, TimerFired(st.channel_id, st.timer_generation))

    def cancel(self) -> None:
        self._st.timer_generation += 1
        self._st.deadline = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class CallScope:
    """One call's state and services, shared by its parts."""

    __slots__ = ("ctx", "host", "st", "timer")

    def __init__(self, ctx: CallContext, st: CallState, host: CallHost) -> None:
        self.ctx = ctx
        self.st = st
        self.host = host
        self.timer = CallTimer(st, host)

    # ---- catalog lookups (the catalog may be swapped between two events) -----------------

    def router(self) -> Router | None:
        return self.ctx.catalog.current.router(self.st.router) if self.st.router else None

    def number(self) -> Number | None:
        return self.ctx.catalog.current.number(self.st.number)

    def buyer(self) -> Buyer | None:
        return self.ctx.catalog.current.buyer(self.st.buyer) if self.st.buyer else None

    def group(self, name: str | None) -> FlowGroup | None:
        return self.ctx.catalog.current.flow_group(name) if name else None

    # ---- ARI requests that may race a hangup ------------------------------------------------

    async def request(self, what: str, request: Awaitable[Any], *, leg: str = "caller") -> bool:
        """Await one ARI request; False when it failed (gone: debug; else an error row)."""
        try:
            await request
        except GONE as exc:
            log.debug("channel gone during request", call=self.st.call_id, request=what,
                      status=exc.status)
            return False
        except AriError as exc:
            log.warning("ARI request failed", call=self.st.call_id, request=what, error=str(exc))
            self.ctx.record(self.st, EventKind.ERROR, leg=leg, request=what, error=str(exc))
            return False
        return True
