"""Daemon leases and call ownership in PostgreSQL (``migrations/007_daemon_leases.sql``):
how several daemons on one database know who is alive and who carries which call, with no
cluster protocol of their own.

A daemon :func:`register`\\ s at start (a new epoch), then :func:`renew`\\ s its lease every
second or so; a renewal that finds another epoch means a peer took its calls while it was
away (it must stand down: fencing). A peer on the same Asterisk runs :func:`take_over`
periodically: for each daemon whose lease ran out it bumps that daemon's epoch, marks it
taken over and makes itself the owner of that daemon's open calls, in one transaction
(``FOR UPDATE SKIP LOCKED``: two peers never take the same daemon's calls).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_REGISTER = """
INSERT INTO daemons (name, app, ari_url, lease_until, host, pid)
VALUES ($1, $2, $3, now() + make_interval(secs => $4), $5, $6)
ON CONFLICT (name) DO UPDATE SET
    app = EXCLUDED.app, ari_url = EXCLUDED.ari_url, epoch = daemons.epoch + 1,
    lease_until = EXCLUDED.lease_until, started_at = now(), host = EXCLUDED.host,
    pid = EXCLUDED.pid, taken_over_by = NULL, taken_over_at = NULL
RETURNING epoch"""
_RENEW = """
UPDATE daemons SET lease_until = now() + make_interval(secs => $3)
WHERE name = $1 AND epoch = $2"""
_EXPIRED = """
SELECT name FROM daemons
WHERE ari_url = $1 AND name <> $2 AND lease_until < now() AND taken_over_by IS NULL
FOR UPDATE SKIP LOCKED"""
_MARK_TAKEN = """
UPDATE daemons SET epoch = epoch + 1, taken_over_by = $2, taken_over_at = now()
WHERE name = $1"""
_MOVE_CALLS = """
UPDATE calls SET state = jsonb_set(state, '{owner}', to_jsonb($2::text))
WHERE ended_at IS NULL AND state->>'owner' = $1
RETURNING id::text AS id"""
_PEERS = """
SELECT count(*) FROM daemons WHERE ari_url = $1 AND name <> $2 AND lease_until > now()"""
_RELEASE = "UPDATE daemons SET lease_until = now() - interval '1 second' WHERE name = $1 " \
           "AND epoch = $2"


@dataclass(frozen=True, slots=True)
class TakenOver:
    daemon: str
    call_ids: tuple[str, ...]


async def register(conn: Any, name: str, app: str, ari_url: str, ttl: float, host: str,
                   pid: int) -> int:
    """Start (or restart) a daemon's lease; its new epoch."""
    return int(await conn.fetchval(_REGISTER, name, app, ari_url, ttl, host, pid))


async def renew(conn: Any, name: str, epoch: int, ttl: float) -> bool:
    """Extend the lease; False when the epoch moved on (a peer took this daemon's calls)."""
    status: str = await conn.execute(_RENEW, name, epoch, ttl)
    return status.endswith(" 1")


async def peers(conn: Any, me: str, ari_url: str) -> int:
    """How many other daemons on ``ari_url`` hold a live lease (could take over)."""
    return int(await conn.fetchval(_PEERS, ari_url, me))


async def release(conn: Any, name: str, epoch: int) -> None:
    """A clean stop with calls still up: let a peer take them over at once."""
    await conn.execute(_RELEASE, name, epoch)


async def take_over(conn: Any, me: str, ari_url: str) -> list[TakenOver]:
    """Take the open calls of every daemon on ``ari_url`` whose lease ran out."""
    out: list[TakenOver] = []
    async with conn.transaction():
        for row in await conn.fetch(_EXPIRED, ari_url, me):
            await conn.execute(_MARK_TAKEN, row["name"], me)
            moved = await conn.fetch(_MOVE_CALLS, row["name"], me)
            out.append(TakenOver(row["name"], tuple(r["id"] for r in moved)))
    return out
