"""The call log writer against a real PostgreSQL: order, batching, retry without loss, and
ops PostgreSQL rejects set aside (loudly) without stopping the log."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from keypress_ari.calllog.ops import CallEvent, CallOpened, CallUpdated, Op, WebhookQueued
from keypress_ari.store.journal import Journal
from keypress_ari.store.log_writer import CallLogWriter
from keypress_ari.store.memory_store import MemoryStore
from keypress_ari.store.pg_store import PgStore
from keypress_ari.store.rejects import REJECTED_FILE, is_rejection, message, read_rejected


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
    writer = CallLogWriter(PgStore(db), batch_size=7)
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


def poison(call_id: str, seq: int) -> CallEvent:
    """A key press PostgreSQL refuses: jsonb cannot hold \u0000."""
    return CallEvent(call_id, seq, datetime.now(UTC), "caller", "key_press", "1", None,
                     {"n": seq, "text": "a\u0000b"})


def webhook(call_id: str, method: str = "POST") -> WebhookQueued:
    return WebhookQueued(call_id, "g/1", "http://127.0.0.1:9/hook", method,
                         {"Authorization": "Bearer TOPSECRET"}, '{"secret": "BODYSECRET"}',
                         str(uuid.uuid4()))


async def events(db: asyncpg.Pool, call_id: str) -> list[tuple[int | None, str]]:
    rows = await db.fetch(
        "SELECT seq, kind FROM call_events WHERE call_id = $1::uuid ORDER BY id", call_id)
    return [(r["seq"], r["kind"]) for r in rows]


class FlakyPool:
    """Fault injection: the first ``failures`` transactions (or those numbered in ``fail``,
    from 1) fail like a dropped connection."""

    def __init__(self, pool: asyncpg.Pool, failures: int = 0,
                 fail: frozenset[int] = frozenset()) -> None:
        self.pool = pool
        self.failures = failures
        self.fail = fail
        self.attempts = 0

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        self.attempts += 1
        if self.attempts <= self.failures or self.attempts in self.fail:
            raise ConnectionResetError("injected: connection reset")
        async with self.pool.acquire() as conn:
            yield conn


async def test_failed_batches_are_retried_and_nothing_is_lost(db: asyncpg.Pool) -> None:
    call_id = str(uuid.uuid4())
    flaky = FlakyPool(db, failures=3)
    writer = CallLogWriter(PgStore(flaky), batch_size=100, max_backoff=0.05)
    writer.emit(opened(call_id))
    for seq in range(1, 21):
        writer.emit(event(call_id, seq))
    await run_until_flushed(writer)
    assert writer.failures == 3 and writer.rejected == 0
    async with db.acquire() as conn:
        count = await conn.fetchval(
            "SELECT count(*) FROM call_events WHERE call_id = $1::uuid", call_id)
    assert count == 20


async def test_a_row_written_twice_is_stored_once(db: asyncpg.Pool) -> None:
    call_id = str(uuid.uuid4())
    writer = CallLogWriter(PgStore(db))
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
    writer = CallLogWriter(PgStore(flaky), max_backoff=0.01)
    writer.emit(opened(str(uuid.uuid4())))
    task = asyncio.create_task(writer.run())
    assert await writer.flush(0.3) is False
    assert writer.backlog == 1
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_poison_op_is_set_aside_and_the_log_carries_on(db: asyncpg.Pool,
                                                              tmp_path: Path) -> None:
    call_id = str(uuid.uuid4())
    journal_dir = tmp_path / "journal"
    writer = CallLogWriter(PgStore(db), batch_size=5, journal=Journal(journal_dir))
    bad = poison(call_id, 2)
    hook = webhook(call_id)
    # The first batch: opened, 1, 2 (poison) with the webhook it fired, 3; then later batches.
    ops: list[Op] = [opened(call_id), event(call_id, 1), bad, hook,
                     *(event(call_id, seq) for seq in range(3, 13)),
                     CallUpdated(call_id, "ended", {}, {"caller": "chan-1"}, "sale", {},
                                 ended_at=datetime.now(UTC), ended_by="caller", end_reason="x")]
    for op in ops:
        writer.emit(op)
    with capture_logs() as logs:
        await run_until_flushed(writer)

    assert writer.rejected == 1 and writer.failures == 0
    assert writer.written == len(ops) - 1
    # Everything else is there, in order; the call's log says where the op was refused.
    assert await events(db, call_id) == [
        (1, "key_press"), (None, "log_rejected"), *((seq, "key_press") for seq in range(3, 13))]
    note = await db.fetchval(
        "SELECT detail FROM call_events WHERE call_id = $1::uuid AND kind = 'log_rejected'",
        call_id)
    assert json.loads(note) == {"op": "CallEvent:key_press",
                                "error": "unsupported Unicode escape sequence"}
    assert await db.fetchval("SELECT idempotency_key::text FROM webhook_outbox "
                             "WHERE call_id = $1::uuid", call_id) == hook.idempotency_key
    assert await db.fetchval("SELECT disposition FROM calls WHERE id = $1::uuid",
                             call_id) == "sale"
    # Loud: one error with the call, the op's kind and PostgreSQL's message.
    loud = [e for e in logs if e["log_level"] == "error"]
    assert len(loud) == 1
    assert loud[0]["call_id"] == call_id and loud[0]["op"] == "CallEvent:key_press"
    assert loud[0]["sqlstate"] == "22P05"
    # Kept: one line in rejected-ops.jsonl that decodes back to the op, to replay by hand.
    lines = (journal_dir / REJECTED_FILE).read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["sqlstate"] == "22P05"
    assert read_rejected(journal_dir / REJECTED_FILE) == [bad]
    reopened = Journal(journal_dir)
    try:
        assert reopened.open() == 0  # the batch counts as done
    finally:
        reopened.close()


async def test_a_rejected_webhook_is_set_aside_without_its_secrets(db: asyncpg.Pool) -> None:
    call_id = str(uuid.uuid4())
    writer = CallLogWriter(PgStore(db))  # no journal: logged and counted, kept nowhere
    hooks: list[int] = []
    writer.on_outbox = lambda: hooks.append(1)
    bad, good = webhook(call_id, method="BOGUS"), webhook(call_id)  # BOGUS: a CHECK fails
    for op in (opened(call_id), event(call_id, 1), bad, good, event(call_id, 2)):
        writer.emit(op)
    with capture_logs() as logs:
        await run_until_flushed(writer)

    assert writer.rejected == 1 and writer.written == 4 and hooks == [1]
    # The key press the webhooks belong to, and the other webhook, are written all the same.
    assert await events(db, call_id) == [(1, "key_press"), (None, "log_rejected"),
                                         (2, "key_press")]
    keys = await db.fetch("SELECT idempotency_key::text AS k FROM webhook_outbox")
    assert [r["k"] for r in keys] == [good.idempotency_key]
    loud = [e for e in logs if e["log_level"] == "error"]
    assert len(loud) == 1 and loud[0]["op"] == "WebhookQueued"
    assert "check constraint" in loud[0]["error"]
    assert "SECRET" not in repr(logs)


@pytest.mark.parametrize("journaled", [True, False])
async def test_a_connection_failure_while_isolating_is_retried(
        db: asyncpg.Pool, tmp_path: Path, journaled: bool) -> None:
    call_id = str(uuid.uuid4())
    # Transactions: 1 the batch (rejected), 2 its first half (committed), 3 the second half:
    # the connection drops. What was settled is done; the rest is retried and isolated.
    flaky = FlakyPool(db, fail=frozenset({3}))
    journal = Journal(tmp_path / "journal") if journaled else None
    writer = CallLogWriter(PgStore(flaky), max_backoff=0.05, journal=journal)
    writer.emit(opened(call_id))
    for seq in range(1, 9):
        writer.emit(poison(call_id, seq) if seq == 6 else event(call_id, seq))
    await run_until_flushed(writer)

    assert writer.failures == 1 and writer.rejected == 1 and writer.written == 8
    assert await events(db, call_id) == [
        *((seq, "key_press") for seq in range(1, 6)), (None, "log_rejected"),
        (7, "key_press"), (8, "key_press")]
    if journaled:  # set aside once, not once per attempt
        assert len(read_rejected(tmp_path / "journal" / REJECTED_FILE)) == 1


def test_rejections_are_told_from_outages() -> None:
    exc = asyncpg.exceptions
    assert is_rejection(exc.UntranslatableCharacterError("unsupported Unicode escape sequence"))
    assert is_rejection(exc.StringDataRightTruncationError("value too long"))
    assert is_rejection(exc.CheckViolationError("violates check constraint"))
    assert is_rejection(exc.ForeignKeyViolationError("violates foreign key constraint"))
    for outage in (ConnectionResetError("reset"), OSError("refused"), TimeoutError(),
                   asyncpg.InterfaceError("pool is closing"),
                   exc.ConnectionDoesNotExistError("closed"),
                   exc.CannotConnectNowError("starting up"),
                   exc.TooManyConnectionsError("too many"), exc.AdminShutdownError("bye"),
                   exc.ReadOnlySQLTransactionError("read-only"),
                   exc.UndefinedTableError("no such table"), exc.DeadlockDetectedError("x")):
        assert not is_rejection(outage), outage
    # asyncpg's own encoding errors quote the value: only the argument's number is kept.
    leak = exc.DataError("invalid input for query argument $5 in element #0 of executemany() "
                         "sequence: 'Bearer TOPSECRET' (expected str, got bytes)")
    assert "TOPSECRET" not in message(leak) and "$5" in message(leak)


async def test_listeners_see_every_op_in_order_and_a_failing_one_stops_nothing(
        db: asyncpg.Pool) -> None:
    """The listeners (metrics) see every op emitted, in order. A listener that raises is
    logged and changes nothing else."""
    call_id = str(uuid.uuid4())
    writer = CallLogWriter(PgStore(db))
    seen: list[Op] = []

    def broken(op: Op) -> None:
        raise RuntimeError("listener bug")

    writer.add_listener(broken)
    writer.add_listener(seen.append)
    ops: list[Op] = [opened(call_id), *(event(call_id, seq) for seq in range(1, 6))]
    with capture_logs() as logs:
        for op in ops:
            writer.emit(op)
        assert writer.backlog == 6  # queued at once
        await run_until_flushed(writer)
    assert seen == ops
    assert sum(entry["event"] == "call log listener failed" for entry in logs) == 6
    async with db.acquire() as conn:
        seqs = [r["seq"] for r in await conn.fetch(
            "SELECT seq FROM call_events WHERE call_id = $1::uuid ORDER BY id", call_id)]
    assert seqs == [1, 2, 3, 4, 5]


def test_listeners_see_an_op_as_it_is_emitted() -> None:
    writer = CallLogWriter(MemoryStore())
    seen: list[Op] = []
    writer.add_listener(seen.append)
    op = event(str(uuid.uuid4()), 1)
    writer.emit(op)
    assert seen == [op] and writer.backlog == 1


async def test_ops_staged_while_the_journal_appends_go_to_the_journal_too(
        tmp_path: Path) -> None:
    """A source may stage ops while an append runs in its thread (its wake-up is then
    cleared by the writer's wait that follows): the spill takes them before it returns,
    so during an outage they are not left in memory until the retry's backoff ends."""
    call_id = str(uuid.uuid4())
    journal = Journal(tmp_path / "journal")
    journal.open()
    writer = CallLogWriter(MemoryStore(), journal=journal)
    late = event(call_id, 2)
    flushes = 0

    def flush() -> None:  # nothing staged at first; one op staged during the first append
        nonlocal flushes
        flushes += 1
        if flushes == 2:
            writer.emit(late)

    writer.add_source(flush, lambda: 1 if flushes < 2 else 0)
    first = event(call_id, 1)
    writer.emit(first)
    await writer._spill()
    assert writer.backlog == writer.journal_backlog == 2
    assert [op.seq for op in journal.pending() if isinstance(op, CallEvent)] == [1, 2]
    journal.close()
