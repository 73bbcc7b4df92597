"""The daemon's LISTEN for catalog changes survives its connection dropping: terminated by
PostgreSQL (``pg_terminate_backend``), or cut and refused for a while (a proxy), it is
re-issued with backoff and the next catalog change reaches the daemon through NOTIFY."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from keypress_ari.daemon import Daemon
from keypress_ari.flows.yamlio import load_catalog_yaml
from keypress_ari.store.catalog import import_catalog
from tests.support.process import until
from tests.support.tcpproxy import TcpProxy
from tests.test_pg_outage import via

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]


def catalog(number: str) -> str:
    return f"""
routers:
  - {{name: direct, request_key_press: false, buyers: [answer]}}
buyers:
  - {{name: answer, endpoint: "Local/answer@keypress-buyers/n"}}
numbers:
  - {{number: "{number}", router: direct}}
"""


async def change_catalog(db: asyncpg.Pool, number: str) -> int:
    """A catalog change through the store (as `flows import` or the admin API make one)."""
    async with db.acquire() as conn:
        summary = await import_catalog(conn, load_catalog_yaml(catalog(number), "t.yaml"))
    return summary.version


async def picked_up_by_notify(d: Daemon, db: asyncpg.Pool, number: str) -> None:
    notifies = d.catalog_notifies
    version = await change_catalog(db, number)

    async def notified() -> bool:
        return d.catalog_notifies > notifies
    await until(notified, 10.0, "the catalog NOTIFY reached the daemon")
    await d.wait_catalog(version, 10.0)
    assert d.catalog.current.number(number) is not None  # the new catalog is the live one



async def test_listen_is_reissued_after_its_backend_is_terminated(
        daemon: Any, db: asyncpg.Pool) -> None:
    d: Daemon = daemon.daemon
    listener = d.listener
    assert listener is not None
    await picked_up_by_notify(d, db, "5550100")
    pid = listener.pid
    assert pid is not None
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    await listener.wait_reconnects(1, 15.0)
    assert listener.pid not in (None, pid)
    await picked_up_by_notify(d, db, "5550101")
    assert listener.reconnects == 1
    assert "keypress_listen_reconnects_total 1\n" in d.metrics.render()


async def test_listen_retries_with_backoff_while_postgresql_refuses_then_catches_up(
        pg_proxy: TcpProxy, daemon_factory: Any, pg_dsn: str, db: asyncpg.Pool) -> None:
    running = await daemon_factory(dsn=via(pg_proxy, pg_dsn))
    d: Daemon = running.daemon
    listener = d.listener
    assert listener is not None
    pg_proxy.refuse()
    pg_proxy.cut()  # every connection of the daemon drops; new ones are refused

    async def retried() -> bool:
        return listener.failed_attempts >= 3
    await until(retried, 15.0, "LISTEN reconnection attempts while refused")
    assert listener.reconnects == 0
    version = await change_catalog(db, "5550102")  # its NOTIFY reaches nobody
    pg_proxy.refuse(False)
    await listener.wait_reconnects(1, 15.0)
    await d.wait_catalog(version, 10.0)  # caught up on reconnecting
    assert d.catalog.current.number("5550102") is not None
    await picked_up_by_notify(d, db, "5550103")
