"""The ami and fastagi modes under faults, as the Stasis mode is tested: PostgreSQL away
mid-call (the keys are still served from memory and the log catches up), Asterisk restarted
(the ami call that died with it is closed once AMI is back; new calls are served). The AMI
connection cut and the daemon restarted are in test_ami_mode.py / test_agi_mode.py."""

from __future__ import annotations

import os
import signal
from typing import Any

import asyncpg
import pytest

from keypress_ari.calllog.ops import CallOpened
from tests import test_agi_mode as agi
from tests.support.asterisk import AsteriskServer
from tests.support.caller import TestCaller
from tests.support.daemon import RunningDaemon
from tests.support.tcpproxy import TcpProxy
from tests.test_ami_mode import CATALOG, NUMBER, dial_call, opened
from tests.test_ari_faults import shut_down, start_daemon
from tests.test_pg_outage import stored_events, via

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]



async def test_ami_keys_are_served_while_postgresql_is_away(
        pg_proxy: TcpProxy, daemon_factory: Any, test_caller: Any, pg_dsn: str,
        db: asyncpg.Pool) -> None:
    running: RunningDaemon = await daemon_factory(ami=True, dsn=via(pg_proxy, pg_dsn))
    await running.load(CATALOG)
    writer = running.daemon.calllog
    assert writer is not None
    call, phone = await dial_call(test_caller, "5551240101")
    await call.press("0")
    call_id = await opened(running)
    await running.watch.event(call_id, "tokens_set", source="flow")
    assert await writer.flush(10)
    pg_proxy.reset()
    pg_proxy.refuse(True)  # PostgreSQL unreachable from here on
    try:
        await phone.press("2")
        muted = await running.watch.event(call_id, "call_control_action",
                                          action="mute_consumer")
        assert muted.detail["outcome"] == "ok"  # the flow came from memory
        await phone.press("3")
        await running.watch.event(call_id, "call_control_action", action="unmute_consumer")
        assert writer.backlog > 0 and (await running.daemon.readiness())["database"] is False
    finally:
        pg_proxy.refuse(False)
    await phone.press("1")  # qualified by the token set before the outage
    await running.watch.event(call_id, "disposition", disposition="sale")
    await call.wait_hangup(10)
    await running.watch.event(call_id, "call_ended")
    assert await writer.flush(30), f"still {writer.backlog} ops not written"
    rows = await stored_events(db, call_id)
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert "".join(r["digit"] for r in rows if r["kind"] == "key_press") == "0231"
    assert len(rows) == len(running.watch.events(call_id))


async def test_fastagi_keys_are_served_while_postgresql_is_away(
        pg_proxy: TcpProxy, daemon_factory: Any, test_caller: Any, pg_dsn: str,
        db: asyncpg.Pool) -> None:
    running: RunningDaemon = await daemon_factory(agi=True, dsn=via(pg_proxy, pg_dsn))
    await running.load(agi.CATALOG)
    writer = running.daemon.calllog
    assert writer is not None
    call, phone = await agi.dial_call(test_caller, running, caller_id="5551230101")
    await call.press("0")
    call_id = (await agi.opened(running)).call_id
    await running.watch.event(call_id, "tokens_set", source="flow")
    assert await writer.flush(10)
    pg_proxy.reset()
    pg_proxy.refuse(True)
    try:
        await phone.press("3")  # play to the agent, and a token
        played = await running.watch.event(call_id, "call_control_action", action="play")
        assert played.detail["outcome"] == "ok" and played.detail["mode"] == "fastagi"
        await running.watch.event(call_id, "tokens_set", source="flow",
                                  tokens={"beeped": "yes"})
        assert writer.backlog > 0 and (await running.daemon.readiness())["database"] is False
    finally:
        pg_proxy.refuse(False)
    await phone.press("1")
    await running.watch.event(call_id, "disposition", disposition="sale")
    await call.wait_hangup(10)
    assert await writer.flush(30), f"still {writer.backlog} ops not written"
    rows = await stored_events(db, call_id)
    assert [r["seq"] for r in rows] == list(range(1, len(rows) + 1))
    assert "".join(r["digit"] for r in rows if r["kind"] == "key_press") == "031"
    assert len(rows) == len(running.watch.events(call_id))


async def test_an_asterisk_restart_closes_the_ami_call_it_killed(pg_dsn: str, db: Any) -> None:
    first = AsteriskServer.on_free_ports()
    await first.start()
    kp = await start_daemon(first, pg_dsn, catalog=CATALOG, ami=True)
    ports: dict[str, int] = {"http_port": first.http_port, "ami_port": first.ami_port,
                             "sip_port": first.sip_port, "rtp_start": first.rtp_start,
                             "rtp_end": first.rtp_end, "agi_port": first.agi_port}
    second: AsteriskServer | None = None
    caller = TestCaller(first.base_url, first.ari_user, first.ari_password)
    try:
        await caller.start()
        call, _ = await dial_call(caller, "5551240102")
        await call.press("0")
        call_id = await opened(kp)
        await kp.watch.event(call_id, "tokens_set", source="flow")
        await caller.close()
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)  # a crash: no Hangup events, nothing said
        await first.stop()
        second = AsteriskServer(**ports)  # type: ignore[arg-type]  # ints, by name
        await second.start()
        ended = await kp.watch.event(call_id, "call_ended", timeout=30)
        assert "gone" in ended.detail["reason"]  # AMI's channel list after the new login
        caller = TestCaller(second.base_url, second.ari_user, second.ari_password)
        await caller.start()
        again, phone = await dial_call(caller, "5551240103")
        await phone.press("1")
        fresh = await kp.watch.wait_for(
            lambda o: isinstance(o, CallOpened) and o.number == NUMBER and o.call_id != call_id)
        assert isinstance(fresh, CallOpened)
        await kp.watch.event(fresh.call_id, "disposition", disposition="not_qualified")
        await again.wait_hangup(10)
    finally:
        await shut_down(caller, kp, first, second)
