"""An in-memory :class:`~keypress_ari.store.port.CallStore`: for unit tests of call logic,
benchmarks that must not measure a database, and fault injection (a write that fails, a
slow database). Never a stand-in for PostgreSQL in integration tests.

It keeps what was written (``ops``) unless built with ``keep=False``; ``fail_next`` makes
that many writes fail like a dropped connection; ``delay`` slows every write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from keypress_ari.calllog.ops import CallerBlocked, CallEvent, CallUpdated, Op
from keypress_ari.store.port import OpenCall


class MemoryStore:
    def __init__(self, *, keep: bool = True, schema: int | None = None) -> None:
        self.keep = keep
        self.ops: list[Op] = []
        self.writes = 0
        self.failed_writes = 0
        self.fail_next = 0
        self.delay = 0.0
        self.schema = schema
        self.blocked: set[str] = set()
        self.snapshots: dict[str, CallUpdated] = {}
        self.last_seq: dict[str, int] = {}

    async def write_ops(self, ops: Sequence[Op]) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)  # fault injection: a slow database
        if self.fail_next > 0:
            self.fail_next -= 1
            self.failed_writes += 1
            raise ConnectionResetError("injected: connection reset")
        self.writes += 1
        if not self.keep:
            return
        self.ops.extend(ops)
        for op in ops:
            if type(op) is CallEvent and op.seq is not None:
                self.last_seq[op.call_id] = max(self.last_seq.get(op.call_id, 0), op.seq)
            elif type(op) is CallUpdated:
                self.snapshots[op.call_id] = op
            elif type(op) is CallerBlocked:
                self.blocked.add(op.caller_number)

    async def ping(self, timeout: float = 2.0) -> bool:
        return self.fail_next == 0

    async def schema_version(self) -> int | None:
        return self.schema

    async def blocked_numbers(self) -> set[str]:
        return set(self.blocked)

    async def open_calls(self) -> list[OpenCall]:
        return [OpenCall(dict(u.state), self.last_seq.get(u.call_id, 0))
                for u in self.snapshots.values() if u.ended_at is None and u.state]

    def events(self, call_id: str) -> list[CallEvent]:
        """The call log rows written for one call, in order."""
        return [op for op in self.ops if type(op) is CallEvent and op.call_id == call_id]
