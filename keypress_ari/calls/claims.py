"""Claiming the calls ``StasisBroadcast()`` offers, so that several daemons (each with its
own Stasis app name) can share one Asterisk with no broker between them: Asterisk offers
each call to every app its filter matches (``CallBroadcast``), the first
``POST /events/claim`` wins (StasisStart follows, and the call is this daemon's like any
other), the others get 409, and a call nobody claims goes back to the dialplan when the
broadcast times out.

:func:`claim_delay` is the decision, on plain data. :class:`Claimer` does the claiming off
the event path: one task per offer, bounded in number.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from keypress_ari.ari.client import AriClient
from keypress_ari.ari.errors import AriConflict, AriError, AriNotFound
from keypress_ari.ari.events import CallBroadcast
from keypress_ari.config import BroadcastSettings

log = structlog.get_logger("keypress.claims")
MAX_PENDING = 1000  # offers being claimed at once; more are declined


def claim_delay(settings: BroadcastSettings, *, accepting: bool, live_calls: int,
                pending: int) -> float | None:
    """Seconds to wait before claiming an offer, or None not to claim it (claiming off,
    draining, at ``max_calls`` counting the offers being claimed, or too many pending)."""
    if not settings.claim or not accepting or pending >= MAX_PENDING:
        return None
    load = live_calls + pending
    if settings.max_calls is not None and load >= settings.max_calls:
        return None
    return min(settings.delay_per_call_ms * load, settings.max_delay_ms) / 1000.0


@dataclass(slots=True)
class ClaimCounts:
    won: int = 0
    lost: int = 0       # another daemon claimed it first (409)
    late: int = 0       # the offer was over (404: claimed or timed out)
    failed: int = 0     # any other ARI error
    declined: int = 0   # not claimed (claim_delay said no)

    def as_dict(self) -> dict[str, int]:
        return {"won": self.won, "lost": self.lost, "late": self.late,
                "failed": self.failed, "declined": self.declined}


class Claimer:
    """Claims offered calls for ``app``; ``live_calls`` and ``accepting`` read the
    dispatcher; ``on_outcome`` (e.g. a metrics counter) hears each offer's outcome."""

    def __init__(self, ari: AriClient, app: str, settings: BroadcastSettings, *,
                 live_calls: Callable[[], int], accepting: Callable[[], bool],
                 on_outcome: Callable[[str], None] | None = None) -> None:
        self._ari, self._app, self._settings = ari, app, settings
        self._live_calls, self._accepting = live_calls, accepting
        self._on_outcome = on_outcome
        self._tasks: set[asyncio.Task[None]] = set()
        self.counts = ClaimCounts()

    def on_broadcast(self, event: CallBroadcast) -> None:
        """The stream's callback for ``CallBroadcast``: never blocks."""
        delay = claim_delay(self._settings, accepting=self._accepting(),
                            live_calls=self._live_calls(), pending=len(self._tasks))
        if delay is None:
            self._count("declined")
            return
        task = asyncio.get_running_loop().create_task(self._claim(event.channel.id, delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _claim(self, channel_id: str, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)  # a busier daemon lets a quieter one claim first
        try:
            await self._ari.claim(channel_id, self._app)
        except AriConflict:
            self._count("lost")
        except AriNotFound:
            self._count("late")
        except AriError as exc:
            log.warning("claim failed", channel=channel_id, error=str(exc))
            self._count("failed")
        else:
            self._count("won")

    def _count(self, outcome: str) -> None:
        setattr(self.counts, outcome, getattr(self.counts, outcome) + 1)
        if self._on_outcome is not None:
            self._on_outcome(outcome)

    async def close(self, timeout: float = 2.0) -> None:
        """Let the claims in flight finish (bounded), then cancel what is left."""
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
