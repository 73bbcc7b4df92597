"""The keypress-ari command as an operator runs it: migrate, import, export, calls show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from keypress_ari.calllog.ops import CallEvent, CallOpened
from keypress_ari.store.log_writer import CallLogWriter
from keypress_ari.store.pg_store import PgStore

pytestmark = pytest.mark.pg
EXAMPLE = Path(__file__).parent.parent / "examples" / "flows.yaml"


def cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPRESS_")}
    env["KEYPRESS_DATABASE__DSN"] = dsn
    env["KEYPRESS_CONFIG"] = "/nonexistent/keypress-ari.toml"
    return subprocess.run([sys.executable, "-m", "keypress_ari", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


async def table_counts(pool: asyncpg.Pool) -> dict[str, int]:
    async with pool.acquire() as conn:
        return {t: await conn.fetchval(f"SELECT count(*) FROM {t}")
                for t in ("flow_groups", "flows", "routers", "buyers", "numbers")}


async def test_migrate_is_idempotent(pg_dsn: str) -> None:
    out = cli(pg_dsn, "db", "migrate")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "schema is up to date"


async def test_import_then_export_round_trips(pg_dsn: str, db: asyncpg.Pool) -> None:
    out = cli(pg_dsn, "flows", "import", str(EXAMPLE))
    assert out.returncode == 0, out.stderr
    assert "imported" in out.stdout
    exported = cli(pg_dsn, "flows", "export")
    assert exported.returncode == 0, exported.stderr
    again = cli(pg_dsn, "flows", "export")
    assert exported.stdout == again.stdout
    counts = await table_counts(db)
    assert counts["numbers"] >= 2 and counts["flows"] >= 10


async def test_a_bad_file_names_the_field_and_writes_nothing(pg_dsn: str, db: asyncpg.Pool,
                                                             tmp_path: Path) -> None:
    assert cli(pg_dsn, "flows", "import", str(EXAMPLE)).returncode == 0
    before = await table_counts(db)
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "flow_groups:\n"
        "  - name: press-one\n"
        "    flows:\n"
        "      - key: '1'\n"
        "        continue_routing: true\n"
        "        disposition: sale\n"
    )
    out = cli(pg_dsn, "flows", "import", str(bad))
    assert out.returncode == 2
    assert f"{bad}: flow_groups[0]" in out.stderr
    assert "mutually exclusive" in out.stderr
    assert await table_counts(db) == before

    broken = tmp_path / "broken.yaml"
    broken.write_text("flow_groups:\n  - name: [unclosed\n")
    out = cli(pg_dsn, "flows", "import", str(broken))
    assert out.returncode == 2 and f"{broken}: line" in out.stderr
    assert await table_counts(db) == before


async def test_calls_show_prints_the_timeline(pg_dsn: str, db: asyncpg.Pool) -> None:
    import asyncio
    import uuid
    from datetime import UTC, datetime

    call_id = str(uuid.uuid4())
    writer = CallLogWriter(PgStore(db))
    now = datetime.now(UTC)
    writer.emit(CallOpened(call_id, "18005550100", "5551234", "main", "chan-9", "entering", now))
    writer.emit(CallEvent(call_id, 1, now, "caller", "key_press", "2", "press-one/key 2 #1",
                          {"attempt": 1}))
    task = asyncio.create_task(writer.run())
    assert await writer.flush(5)
    writer.close()
    await task
    out = cli(pg_dsn, "calls", "show", call_id)
    assert out.returncode == 0, out.stderr
    assert "number 18005550100" in out.stdout
    assert "key_press" in out.stdout and "digit=2" in out.stdout
    assert "flow=press-one/key 2 #1" in out.stdout
    listed = cli(pg_dsn, "calls", "list", "--channel", "chan-9")
    assert call_id in listed.stdout
    missing = cli(pg_dsn, "calls", "show", str(uuid.uuid4()))
    assert missing.returncode == 1


def test_run_without_ari_settings_fails_with_one_line() -> None:
    out = cli("postgresql://postgres@127.0.0.1:5432/postgres", "run")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0
    assert "ari: section missing" in out.stderr
