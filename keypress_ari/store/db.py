"""PostgreSQL connection pool and the numbered-migrations runner.

Migrations are the files ``store/migrations/NNN_name.sql``, applied in number order, each in
its own transaction, under a session advisory lock so that two daemons (or a daemon and
``keypress-ari db migrate``) starting together cannot race. Applied ones are recorded in
``schema_migrations``; running again applies only what is new.

Migrations only go forward. A database that holds a migration this version does not ship
(it was migrated by a newer keypress-ari) is refused: ``SchemaTooNew``, with what to do.
Released migration files never change (``tests/test_upgrades.py`` pins their checksums).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import asyncpg

from keypress_ari import __version__

MIGRATION_LOCK_ID = 0x6B657970  # "keyp": advisory lock key shared by every migrator
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    number: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """The migration files shipped in the package, in number order."""
    folder = resources.files("keypress_ari.store") / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.number)
    numbers = [mig.number for mig in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"two migration files share a number: {numbers}")
    return found


class SchemaTooNew(Exception):
    """The database was migrated by a newer keypress-ari: this one refuses to touch it."""


def too_new_message(number: int, name: str, latest: int) -> str:
    return (f"the database schema is at migration {number:03d} ({name}), newer than "
            f"keypress-ari {__version__} knows (its latest is {latest:03d}): a downgrade is "
            "refused. Run the newer keypress-ari, or restore the database backup taken "
            "before the upgrade (docs/upgrading.md)")


async def migrate(conn: Any, *, upto: int | None = None) -> list[str]:
    """Apply pending migrations on ``conn`` (an asyncpg connection); return the applied names.

    ``upto`` stops after that migration number (tests build an older schema with it).
    """
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   number integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT number, name FROM schema_migrations ORDER BY number")
        done = {row["number"]: row["name"] for row in rows}
        shipped = available_migrations()
        known = {mig.number for mig in shipped}
        unknown = [n for n in done if n not in known]
        if unknown:
            newest = max(unknown)
            raise SchemaTooNew(too_new_message(newest, done[newest], max(known)))
        applied: list[str] = []
        for mig in shipped:
            if mig.number in done or (upto is not None and mig.number > upto):
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (number, name) VALUES ($1, $2)",
                    mig.number,
                    mig.name,
                )
            applied.append(f"{mig.number:03d}_{mig.name}")
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)


async def connect_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """An asyncpg pool; raises the driver's error when the server cannot be reached."""
    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
