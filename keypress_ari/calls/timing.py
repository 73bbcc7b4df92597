"""Key press latency: from a DTMF frame arriving to the first ARI request it causes.

The dispatcher marks the arrival time of a DTMF event in the context of the call task that
handles it; the ARI client calls :meth:`DtmfLatency.on_request` before every request, and
the first request made while a mark is set is the one measured. Each call's events are
handled in their own task, so marks of different calls never mix.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar

_arrived: ContextVar[float | None] = ContextVar("keypress_dtmf_arrived", default=None)


class DtmfLatency:
    __slots__ = ("_observe",)

    def __init__(self, observe: Callable[[float], None]) -> None:
        self._observe = observe

    @staticmethod
    def mark(arrived_at: float) -> None:
        _arrived.set(arrived_at)

    @staticmethod
    def clear() -> None:
        _arrived.set(None)

    def on_request(self) -> None:
        arrived = _arrived.get()
        if arrived is not None:
            _arrived.set(None)
            self._observe(time.perf_counter() - arrived)
