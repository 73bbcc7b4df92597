"""The webhook outbox (``migrations/004_outbox.sql``) as the webhook worker sees it: claim due
rows under a lease (``FOR UPDATE SKIP LOCKED``: several workers never take the same row),
settle an attempt (the row updated and a ``webhook_attempt`` row added to the call's log, in
one transaction), release rows not attempted, count what is pending."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

_CLAIM = """
WITH due AS (
    SELECT id FROM webhook_outbox
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at, id
    LIMIT $1
    FOR UPDATE SKIP LOCKED)
UPDATE webhook_outbox o SET next_attempt_at = now() + make_interval(secs => $2::float8)
FROM due WHERE o.id = due.id
RETURNING o.id, o.call_id::text AS call_id, o.flow, o.url, o.method, o.headers::text AS headers,
          o.body, o.idempotency_key::text AS idempotency_key, o.attempts"""
_DELIVERED = """
UPDATE webhook_outbox SET status = 'delivered', attempts = attempts + 1, delivered_at = now(),
       last_error = NULL
WHERE id = $1 AND status = 'pending' RETURNING attempts, status"""
_FAILED = """
UPDATE webhook_outbox SET attempts = attempts + 1,
       status = CASE WHEN attempts + 1 >= $2 THEN 'dead' ELSE 'pending' END,
       next_attempt_at = now() + make_interval(secs => $3::float8),
       last_error = $4
WHERE id = $1 AND status = 'pending' RETURNING attempts, status"""
_EVENT = """
INSERT INTO call_events (call_id, seq, at, leg, kind, digit, flow, detail)
VALUES ($1::uuid, NULL, $2, NULL, 'webhook_attempt', NULL, $3, $4::text::jsonb)"""
_RELEASE = """
UPDATE webhook_outbox SET next_attempt_at = now()
WHERE id = ANY($1::bigint[]) AND status = 'pending'"""
_COUNT_PENDING = """
SELECT count(*) FROM webhook_outbox
WHERE status = 'pending' AND ($1::boolean OR next_attempt_at <= now())"""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    call_id: str
    flow: str | None
    url: str
    method: str
    headers: dict[str, str]
    body: str
    key: str
    attempts: int  # attempts made before this one


class Outbox:
    """``pool``: an asyncpg pool (or a wrapper with the same ``acquire()``)."""

    __slots__ = ("pool",)

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def claim(self, limit: int, lease: float) -> list[OutboxRow]:
        """Up to ``limit`` due rows, invisible to other claims for ``lease`` seconds."""
        async with self.pool.acquire() as conn:
            records = await conn.fetch(_CLAIM, limit, lease)
        return [OutboxRow(r["id"], r["call_id"], r["flow"], r["url"], r["method"],
                          json.loads(r["headers"]), r["body"], r["idempotency_key"],
                          r["attempts"]) for r in records]

    async def release(self, ids: list[int]) -> None:
        """Make claimed rows due again at once (they were not attempted)."""
        async with self.pool.acquire() as conn:
            await conn.execute(_RELEASE, ids)

    async def pending(self, *, settled: bool) -> int:
        """Rows pending and due now (``settled``: pending at all)."""
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval(_COUNT_PENDING, settled))

    async def settle(self, row: OutboxRow, *, at: datetime, error: str | None,
                     max_attempts: int, delay: float, detail: dict[str, Any]) -> tuple[str, int]:
        """Record one attempt (``error`` None: delivered; else retried after ``delay`` or
        dead after ``max_attempts``) and its ``webhook_attempt`` row, in one transaction;
        ``detail`` gets the attempt number and the outcome. Returns ``(outcome, attempt)``."""
        attempt = row.attempts + 1
        async with self.pool.acquire() as conn, conn.transaction():
            if error is None:
                got = await conn.fetchrow(_DELIVERED, row.id)
                outcome = "delivered"
            else:
                got = await conn.fetchrow(_FAILED, row.id, max_attempts, delay, error)
                if got is not None:
                    outcome = "dead" if got["status"] == "dead" else "retry"
                else:
                    outcome = "dead" if attempt >= max_attempts else "retry"
            if got is not None:
                attempt = got["attempts"]
            await conn.execute(_EVENT, row.call_id, at, row.flow,
                               json.dumps({**detail, "attempt": attempt, "outcome": outcome}))
        return outcome, attempt
