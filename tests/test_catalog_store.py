"""The catalog in a real PostgreSQL (fixtures ``db`` / ``pg_dsn`` from tests/pg.py)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from keypress_ari.flows.errors import CatalogError
from keypress_ari.flows.model import Catalog
from keypress_ari.flows.yamlio import dump_catalog_yaml, load_catalog_yaml
from keypress_ari.store.catalog import (
    NOTIFY_CHANNEL,
    KindCounts,
    catalog_version,
    import_catalog,
    load_catalog,
    load_catalog_with_version,
)

pytestmark = pytest.mark.pg

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flows.yaml"
TABLES = ("flow_groups", "flows", "routers", "buyers", "router_buyers", "numbers", "catalog_state")


def example() -> Catalog:
    return load_catalog_yaml(EXAMPLE.read_text(), "flows.yaml")


def partial(text: str) -> Catalog:
    return load_catalog_yaml(text, "part.yaml", partial=True)


async def snapshot(conn: Any) -> dict[str, list[str]]:
    return {
        table: [
            r[0] for r in await conn.fetch(f"SELECT to_jsonb(t)::text FROM {table} t ORDER BY 1")
        ]
        for table in TABLES
    }


async def test_empty_database_loads_empty_catalog(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        assert await load_catalog(conn) == Catalog.empty()


async def test_import_then_load_gives_the_same_catalog(db: asyncpg.Pool) -> None:
    catalog = example()
    async with db.acquire() as conn:
        summary = await import_catalog(conn, catalog)
        loaded = await load_catalog(conn)
    assert summary.flow_groups == KindCounts(created=3, updated=0)
    assert summary.routers == KindCounts(created=2, updated=0)
    assert summary.buyers == KindCounts(created=3, updated=0)
    assert summary.numbers == KindCounts(created=2, updated=0)
    assert summary.flows_written == sum(len(g.flows) for g in catalog.flow_groups)
    assert loaded == catalog
    assert dump_catalog_yaml(loaded) == dump_catalog_yaml(catalog)


async def test_reimport_is_idempotent_and_counts_updates(db: asyncpg.Pool) -> None:
    catalog = example()
    async with db.acquire() as conn:
        first = await import_catalog(conn, catalog)
        flows_before = await conn.fetchval("SELECT count(*) FROM flows")
        second = await import_catalog(conn, catalog)
        loaded = await load_catalog(conn)
        assert await conn.fetchval("SELECT count(*) FROM flows") == flows_before
        assert await conn.fetchval("SELECT count(*) FROM router_buyers") == 4
    assert second.flow_groups == KindCounts(created=0, updated=3)
    assert second.routers == KindCounts(created=0, updated=2)
    assert second.buyers == KindCounts(created=0, updated=3)
    assert second.numbers == KindCounts(created=0, updated=2)
    assert second.version == first.version + 1
    assert loaded == catalog


async def test_partial_import_replaces_flows_and_keeps_the_rest(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await import_catalog(conn, example())
        summary = await import_catalog(
            conn,
            partial(
                """\
                flow_groups:
                  - name: press-one
                    flows: [{key: 3, disposition: callback}]
                routers:
                  - {name: main, flow_group: press-one, buyers: [initech, acme]}
                numbers:
                  - {number: "18005550199", router: direct}
                """
            ),
        )
        loaded = await load_catalog(conn)
    assert summary.flow_groups == KindCounts(created=0, updated=1)
    assert summary.numbers == KindCounts(created=1, updated=0)
    group = loaded.flow_group("press-one")
    assert group is not None and [f.key for f in group.flows] == ["3"]
    main = loaded.router("main")
    assert main is not None and main.buyers == ("initech", "acme") and main.prompt is None
    assert loaded.flow_group("agent-controls") == example().flow_group("agent-controls")
    assert loaded.number("18005550100") is not None
    number = loaded.number("18005550199")
    assert number is not None and number.router == "direct"


async def test_failing_import_writes_nothing(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await import_catalog(conn, example())
        before = await snapshot(conn)
        bad = partial(
            """\
            flow_groups:
              - name: press-one
                flows: [{key: 3, disposition: callback}]
            numbers:
              - {number: "18005550100", router: main}
              - {number: "5551000", router: nowhere}
            """
        )
        with pytest.raises(CatalogError) as info:
            await import_catalog(conn, bad, source="bad.yaml")
        assert str(info.value) == "bad.yaml: numbers[1] (5551000).router: unknown router 'nowhere'"
        assert await snapshot(conn) == before


async def test_version_bumps_and_notify_arrives(db: asyncpg.Pool, pg_dsn: str) -> None:
    listener = await asyncpg.connect(pg_dsn)
    received: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(_conn: Any, _pid: int, channel: str, payload: str) -> None:
        if channel == NOTIFY_CHANNEL:
            received.put_nowait(payload)

    await listener.add_listener(NOTIFY_CHANNEL, on_notify)
    try:
        async with db.acquire() as conn:
            before = await catalog_version(conn)
            summary = await import_catalog(conn, example())
            assert summary.version == before + 1
            assert await catalog_version(conn) == summary.version
            payload = await asyncio.wait_for(received.get(), timeout=10)
            assert payload == str(summary.version)
            version, loaded = await load_catalog_with_version(conn)
            assert (version, loaded) == (summary.version, example())
    finally:
        await listener.remove_listener(NOTIFY_CHANNEL, on_notify)
        await listener.close()


async def test_version_survives_an_emptied_state_table(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        await conn.execute("DELETE FROM catalog_state")
        assert await catalog_version(conn) == 0
        summary = await import_catalog(conn, Catalog.empty())
        assert summary.version == 1 == await catalog_version(conn)


async def _group_id(conn: Any) -> int:
    return int(await conn.fetchval("INSERT INTO flow_groups (name) VALUES ('raw') RETURNING id"))


INSERT_FLOW = """INSERT INTO flows (flow_group_id, position, key, disposition,
                 call_control_actions, continue_routing) VALUES ($1, $2, $3, $4, $5::jsonb, $6)"""


async def test_db_rejects_continue_routing_with_disposition(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        gid = await _group_id(conn)
        with pytest.raises(asyncpg.CheckViolationError, match="flows_continue_routing_exclusive"):
            await conn.execute(INSERT_FLOW, gid, 0, "1", "sale", "[]", True)
        actions = json.dumps(["hangup"])
        with pytest.raises(asyncpg.CheckViolationError, match="flows_continue_routing_exclusive"):
            await conn.execute(INSERT_FLOW, gid, 0, "1", None, actions, True)
        await conn.execute(INSERT_FLOW, gid, 0, "1", None, "[]", True)  # valid alone


@pytest.mark.parametrize("key", ["A", "10", "", "no key press", "**"])
async def test_db_rejects_bad_key(db: asyncpg.Pool, key: str) -> None:
    async with db.acquire() as conn:
        gid = await _group_id(conn)
        with pytest.raises(asyncpg.CheckViolationError, match="flows_key_check"):
            await conn.execute(INSERT_FLOW, gid, 0, key, "sale", "[]", False)


async def test_db_rejects_flow_that_does_nothing(db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        gid = await _group_id(conn)
        with pytest.raises(asyncpg.CheckViolationError, match="flows_does_something"):
            await conn.execute(INSERT_FLOW, gid, 0, "1", None, "[]", False)
