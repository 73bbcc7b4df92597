"""The dashboard's last hour: key presses (matched, no match, ignored) and failed actions
per minute, counted from the call log ops (a ``CallLogWriter`` listener). Sixty buckets,
whatever the traffic: memory does not grow with calls."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from keypress_ari.calllog.kinds import EventKind, press_outcome
from keypress_ari.calllog.ops import CallEvent

MINUTES = 60
SERIES = ("matched", "no_match", "ignored", "failed_actions")


class Activity:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._buckets: dict[int, dict[str, int]] = {}  # minute number -> counts

    def observe_op(self, op: object) -> None:
        if type(op) is not CallEvent:
            return
        assert isinstance(op, CallEvent)
        series: str
        if op.kind == EventKind.KEY_PRESS:
            series = press_outcome(op.detail)
        elif op.kind == EventKind.CALL_CONTROL_ACTION and op.detail.get("outcome") == "failed":
            series = "failed_actions"
        else:
            return
        minute = int(self._clock() // 60)
        bucket = self._buckets.get(minute)
        if bucket is None:
            bucket = self._buckets[minute] = dict.fromkeys(SERIES, 0)
            for old in [m for m in self._buckets if m <= minute - MINUTES]:
                del self._buckets[old]
        bucket[series] += 1

    def last_hour(self) -> dict[str, Any]:
        """Per series, the counts of the last 60 minutes (oldest first), and their maximum."""
        now = int(self._clock() // 60)
        minutes = range(now - MINUTES + 1, now + 1)
        empty = dict.fromkeys(SERIES, 0)
        series = {name: [self._buckets.get(m, empty)[name] for m in minutes] for name in SERIES}
        return {"series": series, "peak": max([1, *(max(v) for v in series.values())])}
