"""PostgreSQL for the test suite: one fresh, migrated database per test session."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from keypress_ari.store.db import migrate

DEFAULT_TEST_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_dsn() -> str:
    return os.environ.get("KEYPRESS_TEST_DSN", DEFAULT_TEST_DSN)


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@asynccontextmanager
async def empty_database(prefix: str = "keypress_empty") -> AsyncIterator[str]:
    """A new database with nothing in it (no migration), dropped afterwards: its DSN.
    PostgreSQL unreachable: an error that says how to start it."""
    admin = admin_dsn()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        conn = await asyncpg.connect(admin, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise RuntimeError(
            f"PostgreSQL not reachable at KEYPRESS_TEST_DSN={admin!r}: {exc} "
            "(run `make postgres`)"
        ) from exc
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield with_database(admin, name)
    finally:
        conn = await asyncpg.connect(admin, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@pytest.fixture(scope="session")
async def pg_dsn() -> AsyncIterator[str]:
    """A new database, migrated, dropped at the end of the session."""
    async with empty_database("keypress_test") as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield dsn


@pytest.fixture(scope="session")
async def pg_pool(pg_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=5)
    yield pool
    await pool.close()


@pytest.fixture
async def db(pg_pool: asyncpg.Pool) -> asyncpg.Pool:
    """The session pool, with every project table emptied before the test."""
    async with pg_pool.acquire() as conn:
        tables = await conn.fetch(
            """SELECT tablename FROM pg_tables WHERE schemaname = 'public'
               AND tablename NOT IN ('schema_migrations', 'catalog_state')"""
        )
        if tables:
            names = ", ".join(f'"{t["tablename"]}"' for t in tables)
            await conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    return pg_pool
