"""Admin writes that ``import_catalog`` does not do, the blocklist, and paged call listing.

Deletes refuse while something still references the object (the message names it), and
bump the catalog version and ``NOTIFY keypress_catalog`` in the same transaction, under the
import's advisory lock (so they serialise with imports). Blocklist changes ``NOTIFY
keypress_blocklist``. Every statement is parameterised.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keypress_ari.flows.model import Catalog
from keypress_ari.store.catalog import (
    _BUMP_VERSION,
    IMPORT_LOCK_ID,
    NOTIFY_CHANNEL,
    load_catalog,
)
from keypress_ari.store.log_queries import _CALL_COLUMNS, CallRow, _call

BLOCKLIST_CHANNEL = "keypress_blocklist"


class NotFound(LookupError):
    """The named object does not exist."""


class InUse(Exception):
    """The object is still referenced; the message says by what."""


@dataclass(frozen=True, slots=True)
class _Kind:
    what: str      # "flow group"
    table: str
    column: str    # the name column
    # (referencing kind, SQL listing the referencing names for the object id $1)
    references: tuple[tuple[str, str], ...]


_GROUP_REFS = (
    ("router", "SELECT name FROM routers WHERE flow_group_id = $1 ORDER BY name"),
    ("buyer", "SELECT name FROM buyers WHERE flow_group_id = $1 ORDER BY name"),
    ("number", "SELECT number FROM numbers WHERE flow_group_id = $1 ORDER BY number"),
)
KINDS = {
    "flow_group": _Kind("flow group", "flow_groups", "name", _GROUP_REFS),
    "router": _Kind("router", "routers", "name", (
        ("number", "SELECT number FROM numbers WHERE router_id = $1 ORDER BY number"),
    )),
    "buyer": _Kind("buyer", "buyers", "name", (
        ("router", """SELECT r.name FROM router_buyers rb JOIN routers r ON r.id = rb.router_id
                      WHERE rb.buyer_id = $1 ORDER BY r.name"""),
    )),
    "number": _Kind("number", "numbers", "number", ()),
}
# Table and column names come from the constant table above, never from input.
_SELECT_ID = {k: f"SELECT id FROM {v.table} WHERE {v.column} = $1 FOR UPDATE"
              for k, v in KINDS.items()}
_DELETE = {k: f"DELETE FROM {v.table} WHERE id = $1" for k, v in KINDS.items()}


async def _bump(conn: Any) -> int:
    version = int(await conn.fetchval(_BUMP_VERSION))
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(version))
    return version


@asynccontextmanager
async def catalog_edit(conn: Any) -> AsyncIterator[Catalog]:
    """A transaction holding the import lock, yielding the stored catalog: read, change and
    ``import_catalog`` inside it without another writer slipping in between."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", IMPORT_LOCK_ID)
        yield await load_catalog(conn)


async def delete_object(conn: Any, kind: str, name: str) -> int:
    """Delete a ``flow_group`` / ``router`` / ``buyer`` / ``number`` by name; the new catalog
    version. ``NotFound`` if there is none, ``InUse`` while something references it."""
    spec = KINDS[kind]
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", IMPORT_LOCK_ID)
        object_id = await conn.fetchval(_SELECT_ID[kind], name)
        if object_id is None:
            raise NotFound(f"no {spec.what} {name!r}")
        users: list[str] = []
        for what, sql in spec.references:
            users.extend(f"{what} {r[0]!r}" for r in await conn.fetch(sql, object_id))
        if users:
            raise InUse(f"{spec.what} {name!r} is used by {', '.join(users)}")
        await conn.execute(_DELETE[kind], object_id)
        return await _bump(conn)


# ---- blocklist ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BlockedCaller:
    caller_number: str
    reason: str
    call_id: str | None
    created_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"caller_number": self.caller_number, "reason": self.reason,
                "call_id": self.call_id, "created_at": self.created_at.isoformat()}


_BLOCK_COLUMNS = "caller_number, reason, call_id::text AS call_id, created_at"


def _blocked(row: Any) -> BlockedCaller:
    return BlockedCaller(row["caller_number"], row["reason"], row["call_id"], row["created_at"])


async def list_blocked(conn: Any) -> list[BlockedCaller]:
    rows = await conn.fetch(f"SELECT {_BLOCK_COLUMNS} FROM blocklist ORDER BY caller_number")
    return [_blocked(r) for r in rows]


async def get_blocked(conn: Any, number: str) -> BlockedCaller | None:
    row = await conn.fetchrow(
        f"SELECT {_BLOCK_COLUMNS} FROM blocklist WHERE caller_number = $1", number)
    return _blocked(row) if row else None


async def add_blocked(conn: Any, number: str, reason: str = "") -> tuple[BlockedCaller, bool]:
    """Block ``number`` (or change its reason); the row and whether it is new."""
    async with conn.transaction():
        row = await conn.fetchrow(
            f"""INSERT INTO blocklist (caller_number, reason) VALUES ($1, $2)
                ON CONFLICT (caller_number) DO UPDATE SET reason = EXCLUDED.reason
                RETURNING {_BLOCK_COLUMNS}, (xmax = 0) AS created""",
            number, reason)
        await conn.execute("SELECT pg_notify($1, $2)", BLOCKLIST_CHANNEL, number)
    return _blocked(row), bool(row["created"])


async def remove_blocked(conn: Any, number: str) -> bool:
    """Unblock ``number``; False when it was not blocked."""
    async with conn.transaction():
        status = await conn.execute("DELETE FROM blocklist WHERE caller_number = $1", number)
        removed: bool = status.endswith(" 1")
        if removed:
            await conn.execute("SELECT pg_notify($1, $2)", BLOCKLIST_CHANNEL, number)
    return removed


# ---- calls ----------------------------------------------------------------------------------

class BadCursor(ValueError):
    """A pagination cursor that this module did not produce."""


def encode_cursor(started_at: datetime, call_id: str) -> str:
    raw = f"{started_at.isoformat()}|{call_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, sep, call_id = raw.partition("|")
        if not sep:
            raise ValueError("no separator")
        started = datetime.fromisoformat(at)
        call_id = str(uuid.UUID(call_id))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadCursor(f"invalid cursor {cursor!r}") from None
    if started.tzinfo is None:
        raise BadCursor(f"invalid cursor {cursor!r}")
    return started, call_id


_LIST_CALLS = f"""
SELECT {_CALL_COLUMNS} FROM calls
WHERE ($1::text IS NULL OR number = $1)
  AND ($2::text IS NULL OR disposition = $2)
  AND ($8::text IS NULL OR caller_number = $8)
  AND ($3::timestamptz IS NULL OR started_at >= $3)
  AND ($4::timestamptz IS NULL OR started_at < $4)
  AND ($5::timestamptz IS NULL OR (started_at, id) < ($5, $6::uuid))
ORDER BY started_at DESC, id DESC
LIMIT $7"""


async def list_calls(
    conn: Any,
    *,
    number: str | None = None,
    disposition: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
    caller: str | None = None,
) -> tuple[list[CallRow], str | None]:
    """Calls newest first (``since`` inclusive, ``until`` exclusive) and the cursor of the
    next page (None on the last page). Keyset pagination on ``(started_at, id)``."""
    if not 1 <= limit <= 1000:
        raise ValueError("limit must be between 1 and 1000")
    after_at, after_id = decode_cursor(cursor) if cursor else (None, None)
    rows = await conn.fetch(_LIST_CALLS, number, disposition, since, until, after_at,
                            after_id, limit + 1, caller)
    calls = [_call(r) for r in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        last = calls[-1]
        next_cursor = encode_cursor(last.started_at, last.id)
    return calls, next_cursor
