"""Webhook delivery from the outbox (``store/migrations/004_outbox.sql``).

The worker claims due pending rows (``FOR UPDATE SKIP LOCKED``, at most as many as it has
free send slots) and pushes their ``next_attempt_at`` forward by a lease (the send timeout
plus a margin), so another worker (another daemon) skips them while they are in flight. Each
row is then sent on its own task with its own timeout, with the headers it was queued with
plus ``Idempotency-Key`` (the row's key, the same on every try) and ``X-Keypress-Signature``
(HMAC-SHA256 of the body with the configured secret). Redirects are not followed.

One transaction per attempt updates the row and adds a ``webhook_attempt`` call_events row
(seq and leg NULL). A 2xx answer is delivered; any other status, a timeout or a connection
error is a failed attempt: the row is retried after ``min(max_backoff, initial_backoff *
2^(n-1))`` seconds times a random factor in [0.5, 1.0] (n = attempts made), and marked dead
once ``max_attempts`` attempts failed. Nothing is lost in a crash: a row whose send never got
recorded is pending and is taken again when its lease runs out (at-least-once delivery; the
receiver deduplicates with Idempotency-Key).

``wake()`` (the call log writer's ``on_outbox`` hook) makes the worker look at once; it also
polls every ``poll_interval`` seconds for rows from elsewhere (a previous run, other daemons).
``stop()`` returns promptly: sends still in flight after ``grace`` are cancelled and their
rows left pending with the lease released. The secret and header values are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog

from keypress_ari.store.outbox import Outbox, OutboxRow
from keypress_ari.webhooks.render import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, sign
from keypress_ari.webhooks.urls import safe_url

log = structlog.get_logger("keypress.webhooks")

USER_AGENT = "keypress-ari-webhooks"
LEASE_MARGIN = 10.0  # seconds a claimed row stays invisible beyond the send timeout
OUTCOMES = ("delivered", "retry", "dead")

class WebhookWorker:
    """Sends outbox rows; see the module docstring. ``counts`` holds attempts by outcome."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        secret: str,
        timeout: float,
        max_attempts: int,
        initial_backoff: float,
        max_backoff: float,
        poll_interval: float,
        session: aiohttp.ClientSession | None = None,
        concurrency: int = 10,
    ) -> None:
        self._outbox = outbox
        self._secret = secret
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._poll_interval = poll_interval
        self._session = session
        self._concurrency = max(1, concurrency)
        self.counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
        self.record_failures = 0
        self._http: aiohttp.ClientSession | None = None
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()
        self._inflight: dict[asyncio.Task[None], OutboxRow] = {}
        self._sending: set[int] = set()  # ids of rows whose request is under way
        self._claiming = False
        self._stopping = False
        self._grace = 0.0
        self._next_due: float | None = None  # loop time of the earliest retry we scheduled
        self._run_task: asyncio.Task[Any] | None = None
        self._warned_secret = False

    # -- control ---------------------------------------------------------------------------

    def wake(self) -> None:
        """Look for due rows now (cheap; the call log writer's ``on_outbox`` hook)."""
        self._wakeup.set()

    async def stop(self, grace: float = 0.0) -> None:
        """Stop :meth:`run`: wait up to ``grace`` seconds for sends in flight, cancel the
        rest (their rows stay pending, lease released) and return when it has ended."""
        self._grace = grace
        self._stopping = True
        self._wakeup.set()
        task = self._run_task
        if task is not None and task is not asyncio.current_task() and not task.done():
            await asyncio.wait([task])

    async def drain(self, timeout: float, *, settled: bool = False) -> bool:
        """Wait until no pending row is due and nothing is in flight; False on timeout.
        Retries scheduled for later stay in the outbox (for the next run): what shutdown
        wants. ``settled=True`` also waits for those, until every row is delivered or dead
        (what tests want). Needs :meth:`run` going; raises if the database is unreachable."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.wake()
        while True:
            self._progress.clear()
            if not self._inflight and not self._claiming:
                left = await self._outbox.pending(settled=settled)
                if left == 0 and not self._inflight and not self._claiming:
                    return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(remaining, self._poll_interval))

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts (jittered)."""
        base: float = self._initial_backoff * 2.0 ** min(max(attempts - 1, 0), 60)
        return min(self._max_backoff, base) * random.uniform(0.5, 1.0)

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until :meth:`stop` is called (or the task is cancelled). A worker runs
        once: after :meth:`stop` (even one called before ``run`` started) it returns at once."""
        if self._run_task is not None:
            raise RuntimeError("the webhook worker has already been run")
        self._run_task = asyncio.current_task()
        own = self._session is None
        self._http = self._session or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._concurrency),
            headers={"User-Agent": USER_AGENT},
        )
        loop = asyncio.get_running_loop()
        try:
            while not self._stopping:
                self._wakeup.clear()
                room = self._concurrency - len(self._inflight)
                rows = await self._claim(room) if room > 0 else []
                if self._stopping:
                    await self._release([r.id for r in rows])
                    break
                for row in rows:
                    task = asyncio.create_task(self._attempt(row))
                    self._inflight[task] = row
                    task.add_done_callback(self._done)
                if rows and len(rows) == room:
                    continue  # maybe more are due; the loop waits only when slots are full
                timeout = self._poll_interval
                if self._next_due is not None:
                    timeout = min(timeout, max(0.0, self._next_due - loop.time()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
        finally:
            await self._shutdown(own)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._progress.set()
        self._wakeup.set()  # a slot is free
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook attempt crashed", error=repr(task.exception()))

    async def _claim(self, limit: int) -> list[OutboxRow]:
        loop = asyncio.get_running_loop()
        if self._next_due is not None and self._next_due <= loop.time():
            self._next_due = None
        self._claiming = True
        try:
            rows = await self._outbox.claim(limit, self._timeout + LEASE_MARGIN)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("webhook outbox poll failed", error=str(exc))
            return []
        finally:
            self._claiming = False
            self._progress.set()  # drain() waits for claims in progress to end
        if rows and not self._secret and not self._warned_secret:
            self._warned_secret = True
            log.warning("webhooks.secret is empty: signatures are computed with an empty key")
        return rows

    async def _release(self, ids: list[int]) -> None:
        """Make claimed rows due again at once (they were not attempted)."""
        if not ids:
            return
        try:
            await self._outbox.release(ids)
        except Exception as exc:  # the lease runs out by itself
            log.warning("could not release webhook rows", ids=ids, error=str(exc))

    async def _shutdown(self, own_session: bool) -> None:
        if self._inflight and self._grace > 0:
            await asyncio.wait(set(self._inflight), timeout=self._grace)
        cancelled = [row.id for task, row in self._inflight.items()
                     if row.id in self._sending and task.cancel()]
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        await self._release(cancelled)
        if own_session and self._http is not None:
            await self._http.close()
        self._http = None

    # -- one attempt -----------------------------------------------------------------------

    async def _send(self, row: OutboxRow) -> int:
        assert self._http is not None
        body = row.body.encode("utf-8")
        headers = {
            **row.headers,
            IDEMPOTENCY_HEADER: row.key,
            SIGNATURE_HEADER: sign(body, self._secret),
        }
        async with (
            asyncio.timeout(self._timeout),
            self._http.request(
                row.method,
                row.url,
                data=body or None,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as resp,
        ):
            return resp.status

    async def _attempt(self, row: OutboxRow) -> None:
        at = datetime.now(UTC)
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        self._sending.add(row.id)
        try:
            status = await self._send(row)
        except TimeoutError:
            error = f"timeout after {self._timeout:g}s"
        except Exception as exc:  # connection errors, bad URLs: all a failed attempt
            text = str(exc).replace(row.url, safe_url(row.url))
            error = f"{type(exc).__name__}: {text}"[:500]
        finally:
            self._sending.discard(row.id)
        duration_ms = round((time.monotonic() - started) * 1000)
        ok = status is not None and 200 <= status < 300
        if status is not None and not ok:
            error = f"HTTP {status}"
        try:
            outcome, attempt = await self._record(row, at, status, error, duration_ms)
        except Exception as exc:  # the row stays leased and is retried when the lease ends
            self.record_failures += 1
            log.error("could not record webhook attempt", outbox_id=row.id, error=str(exc))
            return
        self.counts[outcome] += 1
        fields = {"outbox_id": row.id, "call_id": row.call_id, "flow": row.flow,
                  "url": safe_url(row.url), "attempt": attempt, "duration_ms": duration_ms}
        if outcome == "delivered":
            log.info("webhook delivered", status_code=status, **fields)
        else:
            level = log.warning if outcome == "retry" else log.error
            level(f"webhook attempt failed ({outcome})", error=error, **fields)

    async def _record(
        self, row: OutboxRow, at: datetime, status: int | None, error: str | None, duration_ms: int
    ) -> tuple[str, int]:
        """Update the row and log the attempt in one transaction; ``(outcome, attempt)``."""
        attempt = row.attempts + 1
        delay = self.backoff(attempt) if error is not None else 0.0
        detail: dict[str, Any] = {"outbox_id": row.id, "method": row.method,
                                  "url": safe_url(row.url), "duration_ms": duration_ms}
        if status is not None:
            detail["status_code"] = status
        if error is not None and status is None:
            detail["error"] = error
        outcome, attempt = await self._outbox.settle(row, at=at, error=error,
                                                     max_attempts=self._max_attempts,
                                                     delay=delay, detail=detail)
        if outcome == "retry":
            due = asyncio.get_running_loop().time() + delay
            self._next_due = due if self._next_due is None else min(self._next_due, due)
        return outcome, attempt
