"""The call log writer against a real PostgreSQL: order, batching, retry without loss."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg

from keypress_ari.store.calllog import CallEvent, CallLogWriter, CallOpened, CallUpdated


def opened(call_id: str) -> CallOpened:
    return CallOpened(call_id, "18005550100", "5551234", "main", "chan-1", "entering",
                      datetime.now(UTC))


def event(call_id: str, seq: int, kind: str = "key_press") -> CallEvent:
    return CallEvent(call_id, seq, datetime.now(UTC), "caller", kind, "1", None, {"n": seq})


async def run_until_flushed(writer: CallLogWriter) -> None:
    task = asyncio.create_task(writer.run())
    assert await writer.flush(10)
    writer.close()
    await asyncio.wait_for(task, 5)


async def test_rows_are_written_in_order_in_batches(db: asyncpg.Pool) -> None:
    call_id = str(uuid.uuid4())
    writer = CallLogWriter(db, batch_size=7)
    writer.emit(opened(call_id))
    for seq in range(1, 51):
        writer.emit(event(call_id, seq))
    writer.emit(CallUpdated(call_id, "ended", {"a": "b"}, {"caller": "chan-1"}, "sale", {},
                            ended_at=datetime.now(UTC), ended_by="caller", end_reason="x"))
    await run_until_flushed(writer)
    async with db.acquire() as conn:
        seqs = [r["seq"] for r in await conn.fetch(
            "SELECT seq FROM call_events WHERE call_id = $1::uuid ORDER BY id", call_id)]
        call = await conn.fetchrow("SELECT * FROM calls WHERE id = $1::uuid", call_id)
    assert seqs == list(range(1, 51))
    assert call["disposition"] == "sale"
    assert call["ended_by"] == "caller"
    assert writer.written == 52


class FlakyPool:
    """Fault injection: the first ``failures`` transactions fail like a dropped connection."""

    def __init__(self, pool: asyncpg.Pool, failures: int) -> None:
        self.pool = pool
        self.failures = failures
        self.attempts = 0

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise ConnectionResetError("injected: connection reset")
        async with self.pool.acquire() as conn:
            yield conn


async def test_failed_batches_are_retried_and_nothing_is_lost(db: asyncpg.Pool) -> None:
    call_id = str(uuid.uuid4())
    flaky = FlakyPool(db, failures=3)
    writer = CallLogWriter(flaky, batch_size=100, max_backoff=0.05)
    writer.emit(opened(call_id))
    for seq in range(1, 21):
        writer.emit(event(call_id, seq))
    await run_until_flushed(writer)
    assert writer.failures == 3
    async with db.acquire() as conn:
        count = await conn.fetchval(
            "SELECT count(*) FROM call_events WHERE call_id = $1::uuid", call_id)
    assert count == 20


async def test_a_row_written_twice_is_stored_once(db: asyncpg.Pool) -> None:
    call_id = str(uuid.uuid4())
    writer = CallLogWriter(db)
    writer.emit(opened(call_id))
    writer.emit(opened(call_id))
    writer.emit(event(call_id, 1))
    writer.emit(event(call_id, 1))
    await run_until_flushed(writer)
    async with db.acquire() as conn:
        assert await conn.fetchval(
            "SELECT count(*) FROM call_events WHERE call_id = $1::uuid", call_id) == 1
        assert await conn.fetchval("SELECT count(*) FROM calls WHERE id = $1::uuid", call_id) == 1


async def test_flush_reports_a_backlog_it_could_not_write(db: asyncpg.Pool) -> None:
    flaky = FlakyPool(db, failures=10_000)
    writer = CallLogWriter(flaky, max_backoff=0.01)
    writer.emit(opened(str(uuid.uuid4())))
    task = asyncio.create_task(writer.run())
    assert await writer.flush(0.3) is False
    assert writer.backlog == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
