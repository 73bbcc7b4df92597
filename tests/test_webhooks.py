"""Webhook delivery through the outbox, against a real PostgreSQL and a local HTTP receiver.

The receiver is an aiohttp server on 127.0.0.1; tests wait for its requests on a queue and
for the worker with ``drain`` (no sleeps as synchronisation).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from keypress_ari.calllog.ops import CallEvent, CallOpened, WebhookQueued
from keypress_ari.flows.actions import Webhook
from keypress_ari.store.log_writer import CallLogWriter
from keypress_ari.store.outbox import Outbox
from keypress_ari.store.pg_store import PgStore
from keypress_ari.webhooks.render import queued_op, render_webhook, sign
from keypress_ari.webhooks.worker import WebhookWorker

pytestmark = pytest.mark.pg

SECRET = "test-secret"


@dataclass(frozen=True)
class Received:
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """A webhook endpoint: answers with ``script`` statuses in turn (then 200), or never
    answers while ``hang`` is set."""

    def __init__(self) -> None:
        self.requests: asyncio.Queue[Received] = asyncio.Queue()
        self.script: list[int] = []
        self.hang = False
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.put_nowait(Received(request.method, request.path_qs, dict(request.headers),
                                          body))
        if self.hang:
            await self._release.wait()
        status = self.script.pop(0) if self.script else 200
        return web.Response(status=status, text="ok")

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def release(self) -> None:  # answer the requests being held
        self.hang = False
        self._release.set()

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def next(self, timeout: float = 5.0) -> Received:
        return await asyncio.wait_for(self.requests.get(), timeout)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def make_worker(pool: Any, **overrides: Any) -> WebhookWorker:
    settings = {"secret": SECRET, "timeout": 2.0, "max_attempts": 5, "initial_backoff": 0.05,
                "max_backoff": 0.1, "poll_interval": 0.2, **overrides}
    return WebhookWorker(Outbox(pool), **settings)


@asynccontextmanager
async def running(worker: WebhookWorker) -> AsyncIterator[WebhookWorker]:
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        await asyncio.wait_for(worker.stop(), 5)
        await asyncio.wait_for(task, 5)


@asynccontextmanager
async def writing(pool: Any) -> AsyncIterator[CallLogWriter]:
    writer = CallLogWriter(PgStore(pool))
    task = asyncio.create_task(writer.run())
    try:
        yield writer
    finally:
        assert await writer.flush(10)
        writer.close()
        await asyncio.wait_for(task, 5)


def opened(call_id: str) -> CallOpened:
    return CallOpened(call_id, "18005550100", "5551234", "main", "chan-1", "bridged",
                      datetime.now(UTC))


def key_press(call_id: str, seq: int = 1) -> CallEvent:
    return CallEvent(call_id, seq, datetime.now(UTC), "caller", "key_press", "1",
                     "g/sale", {"matched": True})


def webhook_op(call_id: str, url: str) -> WebhookQueued:
    webhook = Webhook(url=url + "?src={{router}}", headers={"X-Api-Key": "abc"},
                      body={"caller": "{{caller_number}}", "key": "{{digit}}"})
    rendered = render_webhook(webhook, {"caller_number": "5551234", "digit": "1",
                                        "router": "main"})
    return queued_op(call_id, "g/sale", rendered)


async def queue_one(pool: Any, url: str) -> WebhookQueued:
    """A call, its key press and the webhook it fired, written by the call log writer."""
    call_id = str(uuid.uuid4())
    op = webhook_op(call_id, url)
    async with writing(pool) as writer:
        for item in (opened(call_id), key_press(call_id), op):
            writer.emit(item)
    return op


async def outbox(conn: Any) -> list[asyncpg.Record]:
    return list(await conn.fetch("SELECT * FROM webhook_outbox ORDER BY id"))


async def attempts(conn: Any) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT seq, leg, flow, detail::text AS detail FROM call_events
           WHERE kind = 'webhook_attempt' ORDER BY id"""
    )
    for r in rows:
        assert r["seq"] is None and r["leg"] is None and r["flow"] == "g/sale"
    return [json.loads(r["detail"]) for r in rows]


def check_request(got: Received, op: WebhookQueued) -> None:
    assert got.method == "POST"
    assert got.path_qs == "/hook?src=main"
    assert got.body == op.body.encode() == b'{"caller":"5551234","key":"1"}'
    assert got.headers["Idempotency-Key"] == op.idempotency_key
    assert got.headers["X-Keypress-Signature"] == sign(got.body, SECRET)
    assert got.headers["X-Api-Key"] == "abc"
    assert got.headers["Content-Type"] == "application/json"


async def test_queued_webhook_is_delivered_signed(db: asyncpg.Pool, receiver: Receiver) -> None:
    worker = make_worker(db, poll_interval=30)  # only the writer's hook can start the send
    call_id = str(uuid.uuid4())
    op = webhook_op(call_id, receiver.url())
    async with running(worker), writing(db) as writer:
        writer.on_outbox = worker.wake
        for item in (opened(call_id), key_press(call_id), op, op):  # op twice: a retried batch
            writer.emit(item)
        got = await receiver.next()
        assert await worker.drain(5, settled=True)
    check_request(got, op)
    async with db.acquire() as conn:
        (row,) = await outbox(conn)
        (detail,) = await attempts(conn)
    assert row["status"] == "delivered" and row["attempts"] == 1
    assert row["delivered_at"] is not None and row["last_error"] is None
    assert str(row["idempotency_key"]) == op.idempotency_key and row["body"] == op.body
    assert detail["outcome"] == "delivered" and detail["status_code"] == 200
    assert detail["attempt"] == 1 and detail["outbox_id"] == row["id"]
    assert detail["url"] == receiver.url()  # no query string in the log
    assert isinstance(detail["duration_ms"], int)
    assert worker.counts == {"delivered": 1, "retry": 0, "dead": 0}
    assert receiver.requests.empty()


async def test_failures_are_retried_with_the_same_key(db: asyncpg.Pool,
                                                      receiver: Receiver) -> None:
    receiver.script = [500, 500]
    op = await queue_one(db, receiver.url())
    worker = make_worker(db)
    async with running(worker):
        assert await worker.drain(10, settled=True)
    got = [receiver.requests.get_nowait() for _ in range(3)]
    assert receiver.requests.empty()
    for request in got:
        check_request(request, op)
    async with db.acquire() as conn:
        (row,) = await outbox(conn)
        details = await attempts(conn)
    assert row["status"] == "delivered" and row["attempts"] == 3
    assert [d["outcome"] for d in details] == ["retry", "retry", "delivered"]
    assert [d["status_code"] for d in details] == [500, 500, 200]
    assert [d["attempt"] for d in details] == [1, 2, 3]
    assert worker.counts == {"delivered": 1, "retry": 2, "dead": 0}


async def test_endpoint_that_never_answers_ends_dead(db: asyncpg.Pool,
                                                     receiver: Receiver) -> None:
    receiver.hang = True
    await queue_one(db, receiver.url())
    worker = make_worker(db, timeout=0.3, max_attempts=3)
    async with running(worker):
        assert await worker.drain(10, settled=True)
    assert receiver.requests.qsize() == 3
    async with db.acquire() as conn:
        (row,) = await outbox(conn)
        details = await attempts(conn)
    assert row["status"] == "dead" and row["attempts"] == 3 and row["delivered_at"] is None
    assert row["last_error"] == "timeout after 0.3s"
    assert [d["outcome"] for d in details] == ["retry", "retry", "dead"]
    assert all(d["error"] == "timeout after 0.3s" and "status_code" not in d for d in details)
    assert worker.counts == {"delivered": 0, "retry": 2, "dead": 1}


async def test_connection_refused_is_a_failed_attempt(db: asyncpg.Pool) -> None:
    probe = Receiver()
    await probe.start()
    url = probe.url()
    await probe.stop()  # nothing listens on that port any more
    await queue_one(db, url)
    worker = make_worker(db, max_attempts=2)
    async with running(worker):
        assert await worker.drain(10, settled=True)
    async with db.acquire() as conn:
        (row,) = await outbox(conn)
        details = await attempts(conn)
    assert row["status"] == "dead"
    assert [d["outcome"] for d in details] == ["retry", "dead"]
    assert "Connect" in details[0]["error"]


async def test_a_restarted_worker_delivers_what_was_left(db: asyncpg.Pool,
                                                         receiver: Receiver) -> None:
    receiver.script = [503]
    op = await queue_one(db, receiver.url())
    first = make_worker(db, initial_backoff=60, max_backoff=60)
    async with running(first):
        await receiver.next()
        assert await first.drain(5)  # the failure is recorded; the retry is not due yet
    async with db.acquire() as conn:
        (row,) = await outbox(conn)
        assert row["status"] == "pending" and row["attempts"] == 1
        assert row["last_error"] == "HTTP 503"
        assert await conn.fetchval("SELECT $1::timestamptz > now() + interval '20 s'",
                                   row["next_attempt_at"])
        # The daemon is down for a while: the retry falls due before the next one starts.
        await conn.execute("UPDATE webhook_outbox SET next_attempt_at = now()")
    second = make_worker(db)
    async with running(second):
        assert await second.drain(10, settled=True)
    check_request(await receiver.next(), op)
    async with db.acquire() as conn:
        (row,) = await outbox(conn)
        details = await attempts(conn)
    assert row["status"] == "delivered" and row["attempts"] == 2
    assert [d["outcome"] for d in details] == ["retry", "delivered"]
    assert second.counts == {"delivered": 1, "retry": 0, "dead": 0}


async def test_stop_cancels_a_send_in_flight_and_leaves_it_pending(
    db: asyncpg.Pool, receiver: Receiver
) -> None:
    receiver.hang = True
    op = await queue_one(db, receiver.url())
    first = make_worker(db, timeout=30)
    task = asyncio.create_task(first.run())
    first_try = await receiver.next()
    await asyncio.wait_for(first.stop(), 2)  # prompt, although the send would take 30 s
    await asyncio.wait_for(task, 1)
    async with db.acquire() as conn:
        (row,) = await outbox(conn)
        assert await attempts(conn) == []
        assert await conn.fetchval("SELECT $1::timestamptz <= now()", row["next_attempt_at"])
    assert row["status"] == "pending" and row["attempts"] == 0  # lease released
    receiver.hang = False
    second = make_worker(db)
    async with running(second):
        assert await second.drain(10, settled=True)
    second_try = await receiver.next()
    assert first_try.headers["Idempotency-Key"] == second_try.headers["Idempotency-Key"]
    check_request(second_try, op)


class FailingPool:
    """A pool whose connections fail outbox inserts while ``fail`` is set (fault injection);
    everything else passes through."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.fail = True
        self.injected = asyncio.Event()
        self._conn: Any = None

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        async with self.pool.acquire() as conn:
            self._conn = conn
            yield self

    def transaction(self) -> Any:
        return self._conn.transaction()

    async def executemany(self, sql: str, args: Any) -> None:
        if self.fail and "webhook_outbox" in sql:
            self.injected.set()
            raise ConnectionResetError("injected: connection lost before the outbox insert")
        await self._conn.executemany(sql, args)


async def test_key_press_and_outbox_row_commit_together(db: asyncpg.Pool) -> None:
    call_id = str(uuid.uuid4())
    async with writing(db) as writer:  # the call row already exists (an earlier batch)
        writer.emit(opened(call_id))
    failing = FailingPool(db)
    # webhooks stick anyway
    writer = CallLogWriter(PgStore(failing), batch_size=1, max_backoff=0.05)
    hook_calls: list[int] = []
    writer.on_outbox = lambda: hook_calls.append(1)
    writer.emit(key_press(call_id))
    writer.emit(webhook_op(call_id, "http://127.0.0.1:9/hook"))
    writer.emit(webhook_op(call_id, "http://127.0.0.1:9/other"))
    task = asyncio.create_task(writer.run())
    try:
        await asyncio.wait_for(failing.injected.wait(), 5)
        async with db.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM call_events") == 0
            assert await conn.fetchval("SELECT count(*) FROM webhook_outbox") == 0
        assert hook_calls == []
        failing.fail = False
        assert await writer.flush(5)
    finally:
        writer.close()
        await asyncio.wait_for(task, 5)
    assert writer.failures >= 1 and hook_calls == [1]
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM call_events") == 1
        assert await conn.fetchval("SELECT count(*) FROM webhook_outbox") == 2


async def test_many_webhooks_are_sent_concurrently(db: asyncpg.Pool,
                                                   receiver: Receiver) -> None:
    receiver.hang = True  # held until all four arrive: they must be in flight together
    call_id = str(uuid.uuid4())
    async with writing(db) as writer:
        writer.emit(opened(call_id))
        for _ in range(4):
            writer.emit(webhook_op(call_id, receiver.url()))
    worker = make_worker(db, concurrency=4, timeout=5)
    async with running(worker):
        keys = {(await receiver.next()).headers["Idempotency-Key"] for _ in range(4)}
        receiver.release()
        assert await worker.drain(10, settled=True)
    assert len(keys) == 4
    assert worker.counts["delivered"] == 4


async def test_stop_before_run_starts_is_kept(db: asyncpg.Pool) -> None:
    worker = make_worker(db)
    task = asyncio.create_task(worker.run())
    await worker.stop()
    await asyncio.wait_for(task, 2)
    with pytest.raises(RuntimeError, match="already been run"):
        await worker.run()


async def test_drain_waits_for_due_rows_only_unless_settled(db: asyncpg.Pool,
                                                            receiver: Receiver) -> None:
    receiver.script = [500]
    await queue_one(db, receiver.url())
    worker = make_worker(db, initial_backoff=60, max_backoff=60)
    async with running(worker):
        assert await worker.drain(5)  # one failed attempt; the retry is a minute away
        assert not await worker.drain(0.3, settled=True)
    async with db.acquire() as conn:
        (row,) = await outbox(conn)
    assert row["status"] == "pending" and row["attempts"] == 1
