"""This daemon as a member of a cluster of daemons sharing one PostgreSQL: it holds a lease
(``store.leases``) that it renews; it takes over the calls of a peer on the same Asterisk
whose lease ran out; and it stands down when it finds that a peer took its own calls while
it was away (a revived old owner must not act on calls it lost: fencing).

The supervisor is here; what a take-over does to the calls is ``calls.takeover``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import structlog

from keypress_ari.config import ClusterSettings
from keypress_ari.store import leases
from keypress_ari.store.leases import TakenOver

log = structlog.get_logger("keypress.cluster")


class ClusterMember:
    def __init__(self, settings: ClusterSettings, pool: Any, *, name: str, app: str,
                 ari_url: str) -> None:
        self.settings, self._pool = settings, pool
        self.name, self.app, self.ari_url = name, app, ari_url
        self.epoch = 0
        self.fenced = False
        self.taken_over: list[TakenOver] = []  # what this daemon took, newest last
        self.renew_failures = 0
        self.peers = 0  # live daemons on the same Asterisk, at the last renewal
        self.valid_until = 0.0  # monotonic time the lease surely holds until

    def lease_ok(self) -> bool:
        """Whether this daemon may act on its calls now: clustering is off, or its lease
        surely holds. False after a pause longer than the lease (SIGSTOP, a frozen VM, no
        PostgreSQL): events wait until the next renewal says whether the calls are still
        ours (``run`` calls ``on_renewed``) or a peer's (``on_fenced``). Whether a peer
        exists does not matter: one that joined during the last interval may have taken
        the calls already."""
        if not self.settings.enabled:
            return True
        return not self.fenced and time.monotonic() < self.valid_until

    async def join(self) -> int:
        """Register (a new epoch); the epoch."""
        sent = time.monotonic()
        async with self._pool.acquire() as conn:
            self.epoch = await leases.register(conn, self.name, self.app, self.ari_url,
                                               self.settings.lease_ttl, socket.gethostname(),
                                               os.getpid())
            self.peers = await leases.peers(conn, self.name, self.ari_url)
        self.valid_until = sent + self.settings.lease_ttl
        log.info("joined the cluster", name=self.name, epoch=self.epoch)
        return self.epoch

    async def run(self, *, can_take: Callable[[], bool],
                  on_taken: Callable[[TakenOver], Awaitable[None]],
                  on_fenced: Callable[[], None], on_renewed: Callable[[], None]) -> None:
        """Renew the lease and look for expired peers every ``renew_interval`` s, until
        cancelled or fenced. A database that does not answer is retried next round (the
        lease may expire meanwhile: then a peer takes the calls, and this daemon learns it
        at its next renewal)."""
        c = self.settings
        while not self.fenced:
            await asyncio.sleep(c.renew_interval)
            try:
                async with asyncio.timeout(c.renew_interval * 2):
                    taken = await self._round(can_take())
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                self.renew_failures += 1
                log.warning("lease renewal failed", name=self.name, error=str(exc))
                continue
            if self.fenced:
                log.error("a peer took this daemon's calls while it was away: standing down "
                          "(restart it to rejoin)", name=self.name)
                on_fenced()
                return
            on_renewed()
            for t in taken:
                log.warning("took over the calls of a daemon whose lease ran out",
                            daemon=t.daemon, calls=len(t.call_ids))
                self.taken_over.append(t)
                await on_taken(t)

    async def _round(self, take: bool) -> list[TakenOver]:
        sent = time.monotonic()
        async with self._pool.acquire() as conn:
            if not await leases.renew(conn, self.name, self.epoch, self.settings.lease_ttl):
                self.fenced = True
                return []
            self.valid_until = sent + self.settings.lease_ttl
            self.peers = await leases.peers(conn, self.name, self.ari_url)
            if not (take and self.settings.enabled):
                return []
            return await leases.take_over(conn, self.name, self.ari_url)
