"""Buyer legs across daemons on PostgreSQL (``buyer_legs``, migration 008): the
:class:`~keypress_ari.store.port.BuyerLegStore` of a daemon, identified by ``daemon_id``.

A reservation is one round trip: ``reserve_buyer_leg()`` (defined in the migration) takes the
buyer's advisory lock, counts the live legs and inserts the new one if below the limit.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

_RESERVE = "SELECT reserve_buyer_leg($1, $2, $3, $4, $5)"
_RELEASE = "DELETE FROM buyer_legs WHERE leg_id = $1"
_RENEW = """
INSERT INTO buyer_legs (leg_id, buyer, daemon_id, expires_at)
SELECT held.leg, held.buyer, $1, now() + make_interval(secs => $2)
FROM unnest($3::text[], $4::text[]) AS held (leg, buyer)
ON CONFLICT (leg_id) DO UPDATE
    SET daemon_id = EXCLUDED.daemon_id, expires_at = EXCLUDED.expires_at"""
_DROP_OTHERS = "DELETE FROM buyer_legs WHERE daemon_id = $1 AND leg_id <> ALL($2::text[])"
_DROP_EXPIRED = "DELETE FROM buyer_legs WHERE expires_at <= now()"
_LIVE = "SELECT count(*) FROM buyer_legs WHERE buyer = $1 AND expires_at > now()"


class PgBuyerLegs:
    """``pool``: an asyncpg pool. ``lease``: seconds a row counts after its last renewal."""

    __slots__ = ("daemon_id", "lease", "pool")

    def __init__(self, pool: Any, daemon_id: str, lease: float) -> None:
        self.pool, self.daemon_id, self.lease = pool, daemon_id, lease

    async def reserve(self, buyer: str, leg: str, limit: int) -> int:
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval(_RESERVE, buyer, leg, self.daemon_id, limit,
                                           self.lease))

    async def release(self, leg: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(_RELEASE, leg)

    async def renew(self, held: Mapping[str, str], keep: Collection[str]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(_RENEW, self.daemon_id, self.lease, list(held),
                               list(held.values()))
            await conn.execute(_DROP_OTHERS, self.daemon_id, [*held, *keep])
            await conn.execute(_DROP_EXPIRED)

    async def live(self, buyer: str) -> int:
        """Live legs of ``buyer`` across daemons (the doctor, tests, the benchmark)."""
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval(_LIVE, buyer))
