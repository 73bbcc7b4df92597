"""Buyers' ``max_concurrency`` across every daemon that shares one PostgreSQL.

The choice of the next buyer stays pure (``buyer_choice.next_buyer`` over this daemon's live
counts); once it picks a buyer with a limit, :meth:`BuyerLimits.reserve` reserves the leg in
the shared table in one round trip (the buyer's lock, the count, the insert), so a buyer at
its limit on another daemon is refused here too. Buyers without a limit are never sent to
the database. Releases go in the background (a call ending never waits on PostgreSQL); the
next reservation of the same buyer waits for them. The daemon renews its legs' lease
(:meth:`run`): the legs of a daemon that died stop counting when their lease runs out.

When PostgreSQL does not answer (error or ``timeout``), the limit falls back to this
daemon's own count for ``retry_after`` seconds, with a warning: calls keep being routed,
and a buyer may then get up to its limit from each daemon. The legs held meanwhile reach the
table at the next successful renewal, and count again from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from keypress_ari.calls.buyer_choice import BuyerLoad
from keypress_ari.flows.model import Buyer
from keypress_ari.store.port import BuyerLegStore

log = structlog.get_logger("keypress.buyer_limits")

GLOBAL = "all daemons"
LOCAL = "this daemon only (PostgreSQL unreachable)"


@dataclass(frozen=True, slots=True)
class Reservation:
    granted: bool
    live: int      # live legs of the buyer besides this one, where they were counted
    counted: str   # GLOBAL, LOCAL, or "" (a buyer without a limit: not counted)


class BuyerLimits:
    """``store`` None: limits count this daemon's legs only (unit tests, benchmarks)."""

    def __init__(self, store: BuyerLegStore | None = None, *, timeout: float = 1.0,
                 retry_after: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.timeout, self.retry_after, self.clock = timeout, retry_after, clock
        self.load = BuyerLoad()
        self.fallbacks = 0          # reservations decided on the local count
        self.renewals = 0           # successful lease renewals
        self._counted: dict[str, str] = {}   # legs in the shared table: leg → buyer
        self._pending: dict[str, str] = {}   # reservations in flight: leg → buyer
        self._releasing: dict[str, set[asyncio.Task[None]]] = {}  # buyer → release tasks
        self._down_until = 0.0

    @property
    def live(self) -> Mapping[str, int]:
        """This daemon's live legs per buyer (what the pure choice counts)."""
        return self.load.live

    def reachable(self) -> bool:
        return self.store is not None and self.clock() >= self._down_until

    async def reserve(self, buyer: Buyer, leg: str) -> Reservation:
        """Reserve a leg of ``buyer`` (already chosen as below its limit locally)."""
        limit, name = buyer.max_concurrency, buyer.name
        if limit is None or self.store is None:
            self.load.acquire(name, leg)
            return Reservation(True, self.live.get(name, 1) - 1, "")
        if self.reachable():
            await self._released(name)
            self._pending[leg] = name
            try:
                async with asyncio.timeout(self.timeout):
                    live = await self.store.reserve(name, leg, limit)
            except Exception as exc:
                self._went_down("buyer reservation", exc, buyer=name)
            else:
                if live >= limit:
                    return Reservation(False, live, GLOBAL)
                self._hold(name, leg)
                return Reservation(True, live, GLOBAL)
            finally:
                self._pending.pop(leg, None)
        self.fallbacks += 1
        live = self.live.get(name, 0)
        if live >= limit:
            return Reservation(False, live, LOCAL)
        self._hold(name, leg)  # counted in the table from the next renewal
        return Reservation(True, live, LOCAL)

    def hold(self, buyer: str, leg: str) -> None:
        """A leg this daemon takes over (adopted from a previous run, or moved here from
        another mode): counted here, and in the table from the next renewal."""
        self._hold(buyer, leg)

    def _hold(self, buyer: str, leg: str) -> None:
        self.load.acquire(buyer, leg)
        self._counted[leg] = buyer

    def release(self, leg: str) -> str | None:
        """The leg ended: it stops counting here at once, in the table shortly (never
        waited for). Returns its buyer, or None if it was not held."""
        buyer = self.load.release(leg)
        if self._counted.pop(leg, None) is not None and self.store is not None:
            task = asyncio.get_running_loop().create_task(self._delete(leg))
            tasks = self._releasing.setdefault(buyer or "", set())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        return buyer

    async def _delete(self, leg: str) -> None:
        assert self.store is not None
        try:
            async with asyncio.timeout(self.timeout):
                await self.store.release(leg)
        except Exception as exc:  # the next renewal drops the row (or its lease runs out)
            log.info("buyer leg release not written; the next renewal drops it",
                     leg=leg, error=str(exc))

    async def _released(self, buyer: str) -> None:
        """Wait (bounded) for the releases of ``buyer``'s legs already under way."""
        tasks = self._releasing.get(buyer)
        if tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await asyncio.gather(*tasks, return_exceptions=True)

    async def settle(self, timeout: float = 5.0) -> None:
        """Wait until every release under way has reached the table (or given up)."""
        async with asyncio.timeout(timeout):
            for tasks in list(self._releasing.values()):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def renew(self) -> bool:
        """Renew this daemon's legs in the table (and drop its rows no leg holds)."""
        if self.store is None:
            return True
        try:
            async with asyncio.timeout(self.timeout):
                await self.store.renew(dict(self._counted), list(self._pending))
        except Exception as exc:
            self._went_down("buyer lease renewal", exc)
            return False
        if self._down_until:
            self._down_until = 0.0
            log.warning("PostgreSQL answers again: buyer limits count every daemon's legs",
                        legs=len(self._counted))
        self.renewals += 1
        return True

    async def run(self, interval: float) -> None:
        """Renew the lease every ``interval`` seconds (a third of the lease, say)."""
        while True:
            await asyncio.sleep(interval)
            await self.renew()

    def _went_down(self, what: str, exc: BaseException, **detail: str) -> None:
        self._down_until = self.clock() + self.retry_after
        log.warning(f"{what} failed: buyer limits count this daemon's legs only",
                    error=str(exc) or type(exc).__name__, retry_in=self.retry_after, **detail)
