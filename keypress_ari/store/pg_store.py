"""The call core's store on PostgreSQL (an asyncpg pool)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from keypress_ari.calllog.ops import Op
from keypress_ari.store.log_rows import row_args
from keypress_ari.store.port import OpenCall

_SCHEMA_EXISTS = "SELECT to_regclass('schema_migrations') IS NOT NULL"
_SCHEMA_VERSION = "SELECT max(number) FROM schema_migrations"
_BLOCKED = "SELECT caller_number FROM blocklist"
_OPEN_CALLS = """
SELECT c.state::text AS state,
       (SELECT coalesce(max(e.seq), 0) FROM call_events e WHERE e.call_id = c.id) AS last_seq
FROM calls c WHERE c.ended_at IS NULL AND c.state <> '{}'::jsonb"""


class PgStore:
    """``pool`` is an asyncpg pool (or, in fault-injection tests, a wrapper of one with the
    same ``acquire()``)."""

    __slots__ = ("pool",)

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def write_ops(self, ops: Sequence[Op]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            # Consecutive ops of the same statement go in one executemany; order is kept.
            run_sql: str | None = None
            run_args: list[tuple[Any, ...]] = []
            for op in ops:
                sql, args = row_args(op)
                if sql is not run_sql and run_args:
                    await conn.executemany(run_sql, run_args)
                    run_args = []
                run_sql = sql
                run_args.append(args)
            if run_args and run_sql is not None:
                await conn.executemany(run_sql, run_args)

    async def ping(self, timeout: float = 2.0) -> bool:
        try:
            async with asyncio.timeout(timeout), self.pool.acquire() as conn:
                return bool(await conn.fetchval("SELECT 1") == 1)
        except Exception:
            return False

    async def clock(self) -> float:
        """PostgreSQL's own time, in epoch seconds (the doctor's clock skew check)."""
        async with self.pool.acquire() as conn:
            return float(await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())"))

    async def schema_version(self) -> int | None:
        async with self.pool.acquire() as conn:
            if not await conn.fetchval(_SCHEMA_EXISTS):
                return None
            value = await conn.fetchval(_SCHEMA_VERSION)
        return int(value) if value is not None else None

    async def blocked_numbers(self) -> set[str]:
        async with self.pool.acquire() as conn:
            return {row["caller_number"] for row in await conn.fetch(_BLOCKED)}

    async def open_calls(self) -> list[OpenCall]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_OPEN_CALLS)
        out: list[OpenCall] = []
        for row in rows:
            state = json.loads(row["state"])
            out.append(OpenCall(state if isinstance(state, dict) else {}, int(row["last_seq"])))
        return out
