"""The call log writer: calls and call_events leave the key press path through this queue.

The hot path only appends to an in-memory list (O(1), no await): the call context stages
rows and call updates, and the writer has its *sources* (:meth:`CallLogWriter.add_source`)
queue what they staged when it takes its next batch, a linger after the first one woke it
(``calls/context.py`` says why). One writer task drains the queue in order, in batches, each
batch in one transaction; a failed batch stays at the head of the queue and is retried with
backoff, so rows are neither lost nor reordered.
Rows carry (call_id, seq) and are inserted with ON CONFLICT DO NOTHING, so a batch retried
after an ambiguous failure is stored once.

With a :class:`~keypress_ari.store.journal.Journal` (the daemon always has one), the writer
first appends what is queued in memory to the journal (one fsync per batch), then writes the
oldest journaled ops to PostgreSQL and acknowledges them once committed. While PostgreSQL is
down the queue keeps moving to the journal, so memory stays small and a crash loses at most
the ops queued since the last append (milliseconds); at start, :meth:`CallLogWriter.recover`
opens the journal and :meth:`run` writes what it holds before anything newer. A full journal
is logged at error level once per episode and counted (``journal_full_episodes``); the ops
then stay in memory (never dropped) and the append is retried. Journaled ops recently
appended are also kept in memory (bounded) so the normal path never reads the disk back.

``WebhookQueued`` puts a webhook in the outbox (``migrations/004_outbox.sql``). A batch never
ends just before one (it may grow past ``batch_size`` for that), so it commits in the same
transaction as the op queued right before it: emit the key press row and then, with no
``await`` in between, the webhooks it fired, and they commit together or not at all. After
a batch holding one commits, ``on_outbox`` (the webhook worker's wake-up) is called so delivery
starts without polling.

A failed batch is retried, unless PostgreSQL *rejects the data* of an op: then the ops it
refuses are set aside loudly and the others committed in order (:mod:`.rejects`), so one
poison op cannot stop the log.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable

import structlog

from keypress_ari.calllog.ops import (
    Op,
    WebhookQueued,
)
from keypress_ari.store.journal import Journal, JournalFull
from keypress_ari.store.log_rows import is_webhook
from keypress_ari.store.port import LogStore
from keypress_ari.store.rejects import Isolation

log = structlog.get_logger("keypress.calllog")


class CallLogWriter:
    """Ordered, batched, retrying writer of call rows and call events."""

    def __init__(self, store: LogStore, *, batch_size: int = 500, max_backoff: float = 5.0,
                 journal: Journal | None = None, mirror_limit: int = 20_000,
                 linger: float = 0.002, on_outbox: Callable[[], None] | None = None) -> None:
        self._store = store
        self._batch_size = batch_size
        self._linger = linger
        self._max_backoff = max_backoff
        self._journal = journal
        self._queue: deque[Op] = deque()  # with a journal: not yet journaled
        # The batch being written. With a journal it is the journal's oldest unacknowledged
        # ops, unless _direct: then it is the head of _queue (no journal, or it was full).
        self._inflight: list[Op] = []
        self._direct = False
        # Journaled ops right after _inflight, kept in memory (at most mirror_limit).
        self._mirror: deque[Op] = deque()
        self._mirror_limit = mirror_limit
        self._wakeup = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closing = False
        self.written = 0
        self.failures = 0
        self._isolation = Isolation(  # when PostgreSQL rejects an op's data
            self._write, directory=journal.directory if journal is not None else None)
        self.journal_full = False
        self.journal_full_episodes = 0
        self._listeners: list[Callable[[Op], None]] = []
        self._sources: list[Callable[[], None]] = []
        self._staged_counts: list[Callable[[], int]] = []
        # Called (no arguments, must not block) after a batch with outbox rows commits.
        self.on_outbox = on_outbox

    def add_source(self, flush: Callable[[], None], staged: Callable[[], int]) -> None:
        """A source of ops: ``flush`` queues (with :meth:`emit`) what it has staged, and
        ``staged`` says how many it holds (part of :attr:`backlog`). The writer flushes
        its sources before each batch; a source calls :meth:`wake` when it starts staging."""
        self._sources.append(flush)
        self._staged_counts.append(staged)

    def wake(self) -> None:
        """A source has ops staged: take them at the next batch (after the linger)."""
        self._drained.clear()
        self._wakeup.set()

    def _pull(self) -> bool:
        """Have the sources queue what they staged; True if anything was queued."""
        before = len(self._queue)
        for flush in self._sources:
            flush()
        return len(self._queue) != before

    def add_listener(self, listener: Callable[[Op], None]) -> None:
        """Call ``listener`` with every op as it is queued (metrics, tests). Must not block."""
        self._listeners.append(listener)

    def emit(self, op: Op) -> None:
        """Queue one op; never blocks, never awaits. The key press path does not call it:
        its rows are staged by the call context and emitted from :meth:`_pull`."""
        self._queue.append(op)
        for listener in self._listeners:
            try:
                listener(op)
            except Exception:  # a listener (metrics, tests) never stops the log
                log.exception("call log listener failed")
        self._drained.clear()
        self._wakeup.set()

    @property
    def rejected(self) -> int:
        """Ops PostgreSQL refused, set aside (rejects.py)."""
        return self._isolation.rejected

    @property
    def backlog(self) -> int:
        """Ops not yet in PostgreSQL: staged by the sources, queued, in the journal."""
        return (len(self._queue) + sum(staged() for staged in self._staged_counts)
                + self.journal_backlog)

    @property
    def journal_backlog(self) -> int:
        """Ops journaled and not yet in PostgreSQL."""
        return self._journal.unacked if self._journal is not None else 0

    async def recover(self) -> int:
        """Open the journal (if any); what it holds is written by :meth:`run` before any
        op queued since. Returns the number of ops to replay."""
        journal = self._journal
        if journal is None:
            return 0
        if not journal.is_open:
            await asyncio.to_thread(journal.open)
        if journal.unacked:
            log.warning("call log journal holds ops not yet in PostgreSQL; replaying them",
                        ops=journal.unacked, bytes=journal.size_bytes)
            self._drained.clear()
            self._wakeup.set()
        return journal.unacked

    async def run(self) -> None:
        """Drain the queue (and the journal) until :meth:`close` is called and everything is
        written. Closes the journal when it returns or is cancelled."""
        try:
            await self.recover()
            await self._run()
        finally:
            if self._journal is not None:
                self._journal.close()  # waits for an append still running in its thread

    async def _run(self) -> None:
        backoff = 0.05
        while True:
            self._pull()
            if self._journal is not None and not self._direct:
                await self._spill()
            if not self._inflight and not await self._next_batch():
                if self._pull():  # staged while the journal was being written
                    continue
                self._drained.set()
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                # Let the ops of the same moment gather into one batch (one transaction and
                # one journal append instead of one per op at high rates).
                await asyncio.sleep(self._linger)
                continue
            batch = self._inflight
            try:
                written = await self._isolation.write(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._isolation.settled:  # isolating it got that far: those are done
                    await self._done(batch[:self._isolation.settled], self._isolation.written)
                self.failures += 1
                log.error("call log write failed; will retry", error=str(exc),
                          backlog=self.backlog, retry_in=round(backoff, 2))
                await self._pause(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, self._max_backoff)
                continue
            backoff = 0.05
            await self._done(batch, written)

    async def _pause(self, seconds: float) -> None:
        """Wait before retrying; meanwhile new ops still go to the journal as they come, so
        memory stays small and a crash loses nothing older than one append."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            self._pull()
            if self._journal is not None and not self._direct and not self.journal_full:
                await self._spill()
            left = deadline - loop.time()
            if left <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except TimeoutError:
                return

    def _take(self, size: int) -> list[Op]:
        """The head of the queue, at most ``size`` ops unless a webhook follows (it commits
        with the op queued before it: its key press)."""
        queue = self._queue
        size = min(size, len(queue))
        while size < len(queue) and isinstance(queue[size], WebhookQueued):
            size += 1
        return [queue[i] for i in range(size)]

    async def _next_batch(self) -> bool:
        """Pick the next batch into ``_inflight``; False when there is nothing to write."""
        journal = self._journal
        if journal is not None and journal.unacked:
            if self._mirror:
                batch = [self._mirror.popleft()]
                while self._mirror and (len(batch) < self._batch_size
                                        or is_webhook(self._mirror[0])):
                    batch.append(self._mirror.popleft())
            else:
                batch = await asyncio.to_thread(journal.read, self._batch_size, is_webhook)
            self._inflight = batch
            return True
        if self._queue:  # no journal, or it refused the queue (full): write from memory
            self._inflight = self._take(self._batch_size)
            self._direct = True
            return True
        return False

    async def _spill(self) -> None:
        """Append what is queued in memory to the journal, in batches."""
        journal = self._journal
        assert journal is not None
        while True:
            # Ops staged while an append ran (it awaits a thread) go too: the wake-up their
            # source gave is cleared by the caller's wait right after this returns.
            self._pull()
            if not self._queue:
                break
            batch = self._take(self._batch_size)
            mirrored = len(self._inflight) + len(self._mirror) == journal.unacked
            try:
                await asyncio.to_thread(journal.append, batch)
            except (JournalFull, OSError) as exc:
                self._full(exc)
                return
            for _ in batch:
                self._queue.popleft()
            if mirrored and len(self._mirror) + len(batch) <= self._mirror_limit:
                self._mirror.extend(batch)
        if self.journal_full:  # the episode ends when memory holds nothing unjournaled
            self.journal_full = False
            log.warning("call log journal has room again", backlog=self.backlog)

    def _full(self, exc: Exception) -> None:
        if self.journal_full:
            return
        self.journal_full = True
        self.journal_full_episodes += 1
        journal = self._journal
        assert journal is not None
        log.error("CALL LOG JOURNAL FULL: ops stay in memory (not dropped) until PostgreSQL "
                  "takes the journal's backlog; a crash now would lose them",
                  error=str(exc), memory_backlog=len(self._queue),
                  journal_backlog=journal.unacked, journal_bytes=journal.size_bytes,
                  max_bytes=journal.max_bytes)

    async def _done(self, batch: list[Op], written: int) -> None:
        """``batch``, the head of ``_inflight`` (all of it, or what an isolation settled), is
        done: ``written`` of its ops committed in PostgreSQL, the others set aside."""
        if self._direct:
            for _ in batch:
                self._queue.popleft()
        elif self._journal is not None:
            try:
                await asyncio.to_thread(self._journal.acknowledge, len(batch))
            except OSError as exc:  # the position is advanced in memory all the same
                log.error("call log journal: cannot record the written position; those ops "
                          "may be replayed after a restart (harmless)", error=str(exc))
        self._inflight = self._inflight[len(batch):]
        self._direct = self._direct and bool(self._inflight)
        self.written += written
        if self.on_outbox is not None and any(isinstance(op, WebhookQueued) for op in batch):
            try:
                self.on_outbox()
            except Exception as exc:  # a hook must never stop the writer
                log.error("on_outbox hook failed", error=str(exc))

    async def _write(self, batch: list[Op]) -> None:
        await self._store.write_ops(batch)

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued op is written; False if ``timeout`` passed first."""
        try:
            await asyncio.wait_for(self._drained.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        """Ask :meth:`run` to return once the queue is empty."""
        self._closing = True
        self._wakeup.set()
