"""Two Asterisk servers, a daemon on each, one PostgreSQL, clustering on: restarting one
Asterisk ends its own calls (its daemon closes them and reconnects) and leaves the other
server's bridged call untouched: its buyer's next press still works. Neither daemon takes
the other's calls (take-over stays within one Asterisk)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from keypress_ari.config import ClusterSettings
from keypress_ari.daemon import Daemon
from tests.support.asterisk import AsteriskServer
from tests.support.buyers import TestBuyers
from tests.support.caller import TestCaller
from tests.support.daemon import LogWatch, RunningDaemon, daemon_settings

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]

CATALOG = """
flow_groups:
  - name: agent
    flows:
      - {key: "1", disposition: sale}
routers:
  - {name: live, request_key_press: false, buyers: [acme]}
buyers:
  - {name: acme, endpoint: "Local/acme@keypress-test-buyers/n",
     forwards_to_external_agent: true, flow_group: agent}
numbers:
  - {number: "18005550704", router: live}
"""
CLUSTER = ClusterSettings(enabled=True, lease_ttl=1.0, renew_interval=0.2)


@pytest.fixture
async def second_asterisk() -> AsyncIterator[list[AsteriskServer]]:
    """A second Asterisk (the next free slot of test ports), as a list: a restart replaces
    it with a new server on the same ports."""
    servers = [AsteriskServer.on_free_ports()]
    await servers[0].start()
    try:
        yield servers
    finally:
        await servers[-1].stop()


async def restart(servers: list[AsteriskServer]) -> None:
    old = servers[-1]
    await old.stop()
    new = AsteriskServer(http_port=old.http_port, ami_port=old.ami_port,
                         sip_port=old.sip_port, rtp_start=old.rtp_start, rtp_end=old.rtp_end,
                         agi_port=old.agi_port)
    servers.append(new)
    await new.start()


async def start_daemon(asterisk: Any, pg_dsn: str, state: Path) -> RunningDaemon:
    settings = daemon_settings(asterisk, pg_dsn, state_dir=state)
    daemon = Daemon(settings.model_copy(update={"cluster": CLUSTER}))
    watch = LogWatch()
    await daemon.start()
    assert daemon.calllog is not None and daemon.stream is not None
    daemon.calllog.add_listener(watch)
    await daemon.stream.wait_connected(10)
    return RunningDaemon(daemon, watch)


async def bridged(kp: RunningDaemon, caller: TestCaller) -> tuple[Any, Any, str]:
    call = await caller.place_call("18005550704", wait_answer=False)
    phone = await TestBuyers.of(caller).next_leg("acme")
    await phone.answer()
    call_id = await kp.watch.call_id_for(call.remote_id)
    await kp.watch.event(call_id, "bridged")
    return call, phone, call_id


async def test_restarting_one_asterisk_leaves_the_others_calls_alone(
        asterisk: Any, second_asterisk: list[AsteriskServer], pg_dsn: str, db: Any,
        test_caller: TestCaller, tmp_path: Path) -> None:
    other = second_asterisk[0]
    first = await start_daemon(asterisk, pg_dsn, tmp_path / "one")
    second = await start_daemon(other, pg_dsn, tmp_path / "two")
    other_caller = TestCaller(other.base_url, other.ari_user, other.ari_password)
    await other_caller.start()
    try:
        await first.load(CATALOG)
        await second.daemon.reload_catalog()
        assert first.daemon.name != second.daemon.name  # app@host:port: one per server
        call, phone, call_id = await bridged(first, test_caller)
        _, _, lost_id = await bridged(second, other_caller)

        await other_caller.close()
        resyncs = second.daemon.resyncs
        await restart(second_asterisk)  # its calls end with it
        await second.daemon.wait_resyncs(resyncs + 1, 30)  # reconnected, resynced
        ended = await second.watch.event(lost_id, "call_ended", timeout=10)
        # Asterisk hangs both legs up as it stops: either side may be seen first
        assert ended.detail["ended_by"] in ("caller", "buyer", "unknown")

        await phone.press("1")  # the first server's call never noticed
        await first.watch.event(call_id, "disposition", disposition="sale")
        await call.wait_hangup(10)
        row, events = await first.stored(call_id)
        assert row.disposition == "sale"
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert "adopted" not in [e.kind for e in events]  # nobody took it over
        owners = await db.fetch("SELECT id::text AS id, state->>'owner' AS owner FROM calls")
        assert {r["id"]: r["owner"] for r in owners} == {
            call_id: first.daemon.name, lost_id: second.daemon.name}
        assert (await first.daemon.readiness())["ready"] is True
        assert (await second.daemon.readiness())["ready"] is True
    finally:
        await asyncio.gather(first.daemon.stop(), second.daemon.stop())
