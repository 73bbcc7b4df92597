"""What every stage of a call shares: its state, its services, ARI calls that may race a hangup.

A call is one object (:class:`keypress_ari.calls.call.Call`) assembled from the stage
classes (``prompting``, ``dialing``, ``live``) that all build on :class:`CallBase`.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from keypress_ari.ari.errors import AriConflict, AriError, AriNotFound
from keypress_ari.calls.context import CallContext
from keypress_ari.calls.state import CallState, Stage
from keypress_ari.flows.model import Buyer, Flow, FlowGroup, Number, Router

log = structlog.get_logger("keypress.call")

GONE = (AriNotFound, AriConflict)


class CallHost(Protocol):
    """What a call needs from the dispatcher that owns it."""

    def post(self, event: object) -> None:
        """Queue an event for this call (timers use it)."""

    def attach(self, channel_id: str, call: Any) -> None:
        """Route this channel's events to the call (before the channel exists)."""

    def detach(self, channel_id: str) -> None:
        """Stop routing this channel's events."""


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A call's timer; stale when its generation is not the call's current one."""

    channel_id: str
    generation: int


class CallBase(ABC):
    def __init__(self, ctx: CallContext, state: CallState, host: CallHost) -> None:
        self.ctx = ctx
        self.st = state
        self.host = host
        self._timer: asyncio.TimerHandle | None = None
        self._hanging_up = False  # a hangup request for the caller arrived; StasisEnd follows

    @property
    def ended(self) -> bool:
        return self.st.stage is Stage.ENDED

    # ---- catalog lookups (the catalog may be swapped between two events) -----------------

    def router(self) -> Router | None:
        return self.ctx.catalog.current.router(self.st.router) if self.st.router else None

    def number(self) -> Number | None:
        return self.ctx.catalog.current.number(self.st.number)

    def buyer(self) -> Buyer | None:
        return self.ctx.catalog.current.buyer(self.st.buyer) if self.st.buyer else None

    def group(self, name: str | None) -> FlowGroup | None:
        return self.ctx.catalog.current.flow_group(name) if name else None

    # ---- timers --------------------------------------------------------------------------

    def start_timer(self, seconds: float, deadline: float) -> None:
        st = self.st
        st.timer_generation += 1
        st.deadline = deadline
        self._timer = asyncio.get_running_loop().call_later(
            seconds, self.host.post, TimerFired(st.channel_id, st.timer_generation)
        )

    def cancel_timer(self) -> None:
        self.st.timer_generation += 1
        self.st.deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ---- ARI -----------------------------------------------------------------------------

    async def ari(self, what: str, request: Awaitable[Any], *, leg: str = "caller") -> bool:
        """Await one ARI request; False when it failed (gone: debug; else an error row)."""
        try:
            await request
        except GONE as exc:
            log.debug("channel gone during request", call=self.st.call_id, request=what,
                      status=exc.status)
            return False
        except AriError as exc:
            log.warning("ARI request failed", call=self.st.call_id, request=what, error=str(exc))
            self.ctx.record(self.st, "error", leg=leg, request=what, error=str(exc))
            return False
        return True

    # ---- provided by the stages ------------------------------------------------------------

    @abstractmethod
    async def route(self, reason: str, flow: str | None) -> None:
        """Continue call routing: drop live buyer legs and dial the next available buyer."""

    @abstractmethod
    async def end_call(self, cause: str, why: str) -> None:
        """The daemon ends the call: every leg hung up, the bridge destroyed."""

    @abstractmethod
    async def apply_flow(self, flow: Flow, label: str, *, leg: str) -> None:
        """Carry out a matched flow: tokens, call control actions, disposition or routing."""
