"""Upgrades of the database: from the first released schema to the current one with nothing
lost, two migrators at once, a downgrade refused, released migrations never edited."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from keypress_ari import __version__
from keypress_ari.calllog.ops import CallEvent
from keypress_ari.store import catalog as catalog_store
from keypress_ari.store import log_queries
from keypress_ari.store.db import (
    MIGRATION_LOCK_ID,
    SchemaTooNew,
    available_migrations,
    migrate,
)
from keypress_ari.store.log_writer import CallLogWriter
from keypress_ari.store.pg_store import PgStore
from tests.pg import empty_database
from tests.support.process import until
from tests.test_cli import cli

pytestmark = pytest.mark.pg
RELEASE_0_1_0 = Path(__file__).parent / "data" / "release_0_1_0.sql"
FIRST_RELEASE_SCHEMA = 4  # 0.1.0 shipped migrations 001-004
OLD_TABLES = ("flow_groups", "flows", "routers", "buyers", "router_buyers", "numbers",
              "catalog_state", "calls", "call_events", "blocklist", "webhook_outbox")

# A migration, once released, is never edited: databases out there have run it as it was.
# A change to the schema is a new numbered file. (sha256 of each file as released.)
RELEASED = {
    1: "e2b56861a73e047699c6ebf59005c8ec5c686b4c1ec38e33dde40434fe10ae6e",
    2: "6869fe96c83c6e09445e5f5b1aa72aaec2d00cee45060128e037ee1e4c46a803",
    3: "e6342e182233eaaa53d90e97a93ba9f791fa62b7e30ed46fdb942dbab61571ff",
    4: "bb6829994fd2d533f5d567de9d6f13bd9523f00ded7e20ed21301650dd47d7af",
    5: "7473cd8574da444973813bfb6abeaa4634e1c857f02807e268ab54e7f9c95002",
    6: "665d2a400bb74578a529fdc93848f8ee83ea987200e9e6ede47bf461c304ab1b",
    7: "6a3ec67bd43e7de2354033c831f1733e8cbee643737fe67c98aa51115050f4c1",
    8: "18d015a0a21f12cbd4286cbaf449fd4f8a1d2274b672c8aca36fa0649feaf40d",
}


def test_released_migrations_are_never_edited() -> None:
    shipped = {m.number: hashlib.sha256(m.sql.encode()).hexdigest()
               for m in available_migrations()}
    changed = [n for n, digest in RELEASED.items() if shipped.get(n) != digest]
    assert not changed, f"released migrations edited (add a new one instead): {changed}"
    assert sorted(shipped) == list(range(1, len(shipped) + 1)), "numbers must not skip"


async def columns(conn: asyncpg.Connection) -> dict[str, list[str]]:
    return {table: [r["column_name"] for r in await conn.fetch(
        """SELECT column_name FROM information_schema.columns WHERE table_name = $1
           ORDER BY ordinal_position""", table)] for table in OLD_TABLES}


async def snapshot(conn: asyncpg.Connection,
                   cols: dict[str, list[str]]) -> dict[str, list[dict[str, Any]]]:
    """Every row of the 0.1.0 tables, with the columns 0.1.0 had."""
    return {table: [dict(r) for r in await conn.fetch(
        f"SELECT {', '.join(cols[table])} FROM {table} ORDER BY 1, 2")]
        for table in OLD_TABLES}


async def test_a_first_release_database_upgrades_with_nothing_lost() -> None:
    async with empty_database() as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            applied = await migrate(conn, upto=FIRST_RELEASE_SCHEMA)
            assert applied == ["001_catalog", "002_calls", "003_blocklist", "004_outbox"]
            old_columns = await columns(conn)
            await conn.execute(RELEASE_0_1_0.read_text("utf-8"))
            before = await snapshot(conn, old_columns)
            assert len(before["calls"]) == 3 and len(before["call_events"]) == 15

            upgraded = await migrate(conn)
            assert upgraded == [f"{m.number:03d}_{m.name}" for m in available_migrations()
                                if m.number > FIRST_RELEASE_SCHEMA]
            assert await snapshot(conn, old_columns) == before  # every old row, every old value

            # The current code reads what 0.1.0 wrote ...
            catalog = await catalog_store.load_catalog(conn)
            assert sorted(g.name for g in catalog.flow_groups) == ["agent-keys", "press-one"]
            assert {n.number for n in catalog.numbers} == {"+18005550100", "18005550101"}
            call = await log_queries.get_call(conn, "11111111-1111-4111-8111-111111111111")
            assert call is not None
            events = await log_queries.call_events(
                conn, "11111111-1111-4111-8111-111111111111")
            timeline = log_queries.format_timeline(call, events)
            assert "agent-keys/sale" in timeline and "press-one/vip" in timeline
        finally:
            await conn.close()

        # ... and goes on writing to the call that was open during the upgrade.
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            writer = CallLogWriter(PgStore(pool))
            task = asyncio.create_task(writer.run())
            writer.emit(CallEvent("33333333-3333-4333-8333-333333333333", 3,
                                  datetime.now(UTC), "caller", "key_press", "5",
                                  "agent-keys/sale", {"matched": True}))
            assert await writer.flush(10)
            writer.close()
            await asyncio.wait_for(task, 10)
            seqs = [r["seq"] for r in await pool.fetch(
                "SELECT seq FROM call_events WHERE call_id = $1 ORDER BY seq",
                "33333333-3333-4333-8333-333333333333")]
            assert seqs == [1, 2, 3]
        finally:
            await pool.close()
        shown = cli(dsn, "calls", "show", "22222222-2222-4222-8222-222222222222")
        assert shown.returncode == 0, shown.stderr
        assert "no_press" in shown.stdout


async def waiting_for_the_lock(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND objid = $1", MIGRATION_LOCK_ID & 0xFFFFFFFF))


async def test_two_migrators_at_once_apply_each_migration_once() -> None:
    async with empty_database() as dsn:
        holder = await asyncpg.connect(dsn)
        try:
            # Hold the migrators' lock so that both processes are surely inside at once.
            await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
            runs = [asyncio.create_task(asyncio.to_thread(cli, dsn, "db", "migrate"))
                    for _ in range(2)]
            async def both_waiting() -> bool:
                return await waiting_for_the_lock(holder) >= 2

            await until(both_waiting, 30, "both migrators waiting on the lock")
            await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
            first, second = await asyncio.gather(*runs)
            rows = await holder.fetch("SELECT number FROM schema_migrations ORDER BY number")
        finally:
            await holder.close()
        assert first.returncode == 0, first.stderr
        assert second.returncode == 0, second.stderr

        def applied(out: str) -> list[str]:
            line = out.strip()
            return line.removeprefix("applied: ").split(", ") if line.startswith("applied") \
                else []

        names = [f"{m.number:03d}_{m.name}" for m in available_migrations()]
        # Each migration applied once, all by whichever got the lock first.
        assert sorted([applied(first.stdout), applied(second.stdout)]) == [[], names]
        assert [r["number"] for r in rows] == [m.number for m in available_migrations()]


async def test_a_downgrade_is_refused_with_what_to_do() -> None:
    async with empty_database() as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
            await conn.execute("INSERT INTO schema_migrations (number, name) "
                               "VALUES (999, 'from_a_newer_release')")
            with pytest.raises(SchemaTooNew) as err:
                await migrate(conn)
            count = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        finally:
            await conn.close()
        message = str(err.value)
        assert "999 (from_a_newer_release)" in message and __version__ in message
        assert "downgrade is refused" in message
        assert count == len(available_migrations()) + 1  # nothing applied, nothing removed
        out = cli(dsn, "db", "migrate")
        assert out.returncode == 1
        assert "downgrade is refused" in out.stderr and "Traceback" not in out.stderr
