"""The console's live calls: one row per call in progress, kept from the call log ops (a
``CallLogWriter`` listener, never blocking), and pushed to the open pages (server-sent
events). Pure bookkeeping: no I/O but the subscribers' queues.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass
from typing import Any

from keypress_ari.calllog.kinds import EventKind
from keypress_ari.calllog.ops import CallEvent, CallOpened, CallUpdated

MAX_SUBSCRIBERS = 50       # open live pages; more are refused
SUBSCRIBER_BACKLOG = 500   # updates queued for a slow page before it is dropped


@dataclass(slots=True)
class LiveRow:
    call_id: str
    number: str
    caller: str
    router: str
    stage: str
    buyer: str
    mode: str
    stage_since: float   # epoch seconds
    last_key: str = ""

    def view(self, now: float) -> dict[str, Any]:
        return {**asdict(self), "in_stage_s": max(0, int(now - self.stage_since))}


class LiveCalls:
    def __init__(self, clock: Any = time.time) -> None:
        self._rows: dict[str, LiveRow] = {}
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._clock = clock

    def rows(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [r.view(now) for r in sorted(self._rows.values(), key=lambda r: r.stage_since)]

    def __len__(self) -> int:
        return len(self._rows)

    def observe_op(self, op: object) -> None:
        """A call log op (the writer's listener): update the row, tell the pages."""
        kind = type(op)
        if kind is CallOpened:
            assert isinstance(op, CallOpened)
            row = LiveRow(op.call_id, op.number, op.caller_number, op.router or "", op.stage,
                          "", "stasis", self._clock())
            self._rows[op.call_id] = row
        elif kind is CallUpdated:
            assert isinstance(op, CallUpdated)
            row = self._rows.get(op.call_id)  # type: ignore[assignment]
            if row is None:
                return
            if op.ended_at is not None:
                del self._rows[op.call_id]
                self._push({"gone": op.call_id})
                return
            if op.stage != row.stage:
                row.stage, row.stage_since = op.stage, self._clock()
            row.buyer = str(op.state.get("buyer") or "")
            row.mode = str(op.state.get("mode") or row.mode)
        elif kind is CallEvent:
            assert isinstance(op, CallEvent)
            row = self._rows.get(op.call_id)  # type: ignore[assignment]
            if row is None or op.kind != EventKind.KEY_PRESS:
                return
            row.last_key = f"{op.digit} ({op.leg})"
        else:
            return
        self._push({"row": row.view(self._clock())})

    def subscribe(self) -> asyncio.Queue[dict[str, Any]] | None:
        if len(self._subscribers) >= MAX_SUBSCRIBERS:
            return None
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(SUBSCRIBER_BACKLOG)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(queue)

    def _push(self, update: dict[str, Any]) -> None:
        for queue in list(self._subscribers):
            try:
                queue.put_nowait(update)
            except asyncio.QueueFull:  # a page that stopped reading: it reloads
                self._subscribers.discard(queue)
