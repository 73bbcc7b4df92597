"""An in-memory :class:`~keypress_ari.store.port.CallStore`: for unit tests of call logic,
benchmarks that must not measure a database, and fault injection (a write that fails, a
slow database). Never a stand-in for PostgreSQL in integration tests.

It keeps what was written (``ops``) unless built with ``keep=False``; ``fail_next`` makes
that many writes fail like a dropped connection; ``delay`` slows every write.
:class:`MemoryBuyerLegs` is the buyer legs table (``max_concurrency`` across daemons).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Mapping, Sequence

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


class MemoryLegTable:
    """The ``buyer_legs`` table in memory, shared by the :class:`MemoryBuyerLegs` of several
    "daemons" in one test. ``clock`` gives its time (a test moves it to expire leases);
    ``down`` makes every call fail like an unreachable database."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.rows: dict[str, tuple[str, str, float]] = {}  # leg → (buyer, daemon, expires)
        self.down = False

    def check(self) -> None:
        if self.down:
            raise ConnectionRefusedError("injected: database unreachable")

    def live(self, buyer: str, besides: str = "") -> int:
        now = self.clock()
        return sum(1 for leg, (b, _, expires) in self.rows.items()
                   if b == buyer and expires > now and leg != besides)


class MemoryBuyerLegs:
    """One daemon's view of a :class:`MemoryLegTable`, with PgBuyerLegs' behaviour."""

    def __init__(self, table: MemoryLegTable, daemon_id: str, lease: float) -> None:
        self.table, self.daemon_id, self.lease = table, daemon_id, lease

    async def reserve(self, buyer: str, leg: str, limit: int) -> int:
        table = self.table
        table.check()
        live = table.live(buyer, besides=leg)
        if live < limit:
            table.rows[leg] = (buyer, self.daemon_id, table.clock() + self.lease)
        return live

    async def release(self, leg: str) -> None:
        self.table.check()
        self.table.rows.pop(leg, None)

    async def renew(self, held: Mapping[str, str], keep: Collection[str]) -> None:
        table = self.table
        table.check()
        expires = table.clock() + self.lease
        for leg, buyer in held.items():
            table.rows[leg] = (buyer, self.daemon_id, expires)
        wanted = {*held, *keep}
        now = table.clock()
        for leg, (_, daemon, until) in list(table.rows.items()):
            if (daemon == self.daemon_id and leg not in wanted) or until <= now:
                del table.rows[leg]
