"""The CLI commands added with the admin API: simulate, blocklist, calls list filters."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from keypress_ari.calllog.ops import CallOpened, CallUpdated
from keypress_ari.flows.yamlio import load_catalog_yaml
from keypress_ari.store.catalog import import_catalog
from keypress_ari.store.log_writer import CallLogWriter
from keypress_ari.store.pg_store import PgStore
from tests.test_admin_api import SEED
from tests.test_cli import cli

pytestmark = pytest.mark.pg


async def _seed(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await import_catalog(conn, load_catalog_yaml(SEED, "seed"))


async def test_simulate_text_and_json(pg_dsn: str, db: asyncpg.Pool) -> None:
    await _seed(db)
    out = cli(pg_dsn, "simulate", "--number", "18005550100", "--digit", "1",
              "--token", "caller_state=NY")
    assert out.returncode == 0, out.stderr
    assert "not matched: press-one/ca: caller_state == 'CA'" in out.stdout
    assert "caller_state is 'NY', wanted == 'CA'" in out.stdout
    out = cli(pg_dsn, "simulate", "--number", "18005550100", "--digit", "1",
              "--token", "caller_state=CA", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["matched"] == "press-one/ca" and data["would_run"]["continue_routing"]
    out = cli(pg_dsn, "simulate", "--number", "18005550100", "--digit", "1", "--mode", "ami")
    # no router prompt outside the stasis mode: the live call, whose number has no controls
    assert "stage live  mode ami" in out.stdout and "no key press flows on the caller" in out.stdout
    out = cli(pg_dsn, "simulate", "--number", "999", "--digit", "1")
    assert out.returncode == 1 and "unknown number" in out.stdout
    out = cli(pg_dsn, "simulate", "--number", "1", "--digit", "1", "--token", "novalue")
    assert out.returncode == 2 and "NAME=VALUE" in out.stderr


async def test_blocklist_commands(pg_dsn: str, db: asyncpg.Pool) -> None:
    out = cli(pg_dsn, "blocklist", "add", "+15550001", "--reason", "spam calls")
    assert out.returncode == 0 and "blocked +15550001" in out.stdout, out.stderr
    out = cli(pg_dsn, "blocklist", "list")
    assert "+15550001" in out.stdout and "spam calls" in out.stdout
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT reason FROM blocklist") == "spam calls"
    assert cli(pg_dsn, "blocklist", "remove", "+15550001").returncode == 0
    out = cli(pg_dsn, "blocklist", "remove", "+15550001")
    assert out.returncode == 1 and "not blocked" in out.stderr
    assert cli(pg_dsn, "blocklist", "list").stdout == ""


async def test_calls_list_filters(pg_dsn: str, db: asyncpg.Pool) -> None:
    writer = CallLogWriter(PgStore(db))
    start = datetime(2024, 6, 1, 8, 0, tzinfo=UTC)
    ids = []
    for i in range(4):
        call_id = str(uuid.uuid4())
        ids.append(call_id)
        at = start + timedelta(hours=i)
        writer.emit(CallOpened(call_id, "18005550100", "5551", "main", f"c-{i}", "entering", at))
        writer.emit(CallUpdated(call_id, "ended", {}, {}, "sale" if i % 2 else "no_response",
                                {}, ended_at=at, ended_by="caller"))
    task = asyncio.create_task(writer.run())
    assert await writer.flush(10)
    writer.close()
    await task
    out = cli(pg_dsn, "calls", "list", "--disposition", "sale")
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()] == [ids[3], ids[1]]
    out = cli(pg_dsn, "calls", "list", "--since", "2024-06-01T09:00:00Z",
              "--until", "2024-06-01T11:00:00+00:00")
    assert [line.split()[0] for line in out.stdout.splitlines()] == [ids[2], ids[1]]
    out = cli(pg_dsn, "calls", "list", "--channel", "c-2", "--disposition", "sale")
    assert out.stdout == ""
    out = cli(pg_dsn, "calls", "list", "--since", "yesterday")
    assert out.returncode == 2 and "ISO 8601" in out.stderr
