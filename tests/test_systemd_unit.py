"""config/keypress-ari.service under a real systemd: PID 1 of a systemd-nspawn container
(Debian bookworm, built once with debootstrap) that shares the host network, so the daemon
inside reaches the test Asterisk and PostgreSQL on 127.0.0.1. The tree is set up with
``make install DESTDIR=...``; a drop-in points the unit at the test Asterisk and database
and shortens WatchdogSec (tests/support/systemd_machine.py). Driven with ``nsenter`` into
the container (no machined on the host, so no ``systemctl -M``).

The first test checks the unit itself (users, hardening, READY, the watchdog, stop); the
second runs docs/upgrading.md's procedure with a live call: a bridged call survives
``systemctl restart`` (the new daemon adopts it, the next press works, the log has no gap)
and ``systemctl stop`` (a clean exit, every row written, the channels left in the Stasis
app for the next daemon, which adopts the call again).

Needs root and systemd-nspawn (apt-get install systemd-container debootstrap): run with
``make systemd-test`` (sets KEYPRESS_SYSTEMD_TEST=1); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from keypress_ari.ari.events import (
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelVarset,
    StasisEnd,
    StasisStart,
)
from keypress_ari.flows.yamlio import load_catalog_yaml
from keypress_ari.store.catalog import import_catalog
from tests.support.buyers import BuyerPhone, TestBuyers, agent_route
from tests.support.caller import PlacedCall, TestCaller
from tests.support.systemd_machine import FIGURES, UNIT, WATCHDOG_SEC, Machine, until
from tests.support.systemd_machine import machine as machine  # the module's booted container

pytestmark = [
    pytest.mark.systemd, pytest.mark.asterisk, pytest.mark.pg,
    pytest.mark.skipif(os.environ.get("KEYPRESS_SYSTEMD_TEST") != "1",
                       reason="needs root and systemd-nspawn: make systemd-test"),
]


async def test_the_unit_under_systemd(machine: Machine, test_caller: Any) -> None:
    m = machine
    # The user came from the sysusers.d file, the config's group from the tmpfiles.d file.
    assert m.run("id", "-u", "keypress-ari").strip()
    assert m.run("stat", "-c", "%a %U:%G", "/etc/keypress-ari/keypress-ari.toml").strip() \
        == "640 root:keypress-ari"

    # The installed unit: no complaints from systemd, and its hardening score.
    verify = m.verify(f"/lib/systemd/system/{UNIT}.service")
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = m.run("systemd-analyze", "security", UNIT, "--no-pager", check=False)
    score = float(security.split("Overall exposure level for")[1].split(":")[1].split()[0])
    FIGURES["security_exposure"] = score
    assert score <= 2.0, security

    # Type=notify: `systemctl start` returns once READY=1 came.
    t0 = time.monotonic()
    m.run("systemctl", "start", UNIT, timeout=90)
    FIGURES["start_to_ready_s"] = time.monotonic() - t0
    info = m.show("ActiveState", "SubState", "StatusText", "MainPID", "NRestarts")
    assert info["ActiveState"] == "active", info
    assert info["StatusText"].startswith("taking calls: app keypress"), info
    status = m.run("systemctl", "status", UNIT, "--no-pager", check=False)
    assert "Status: \"taking calls: app keypress" in status, status

    # Hardening leaves the state directory writable: the journal lives there.
    assert m.run("stat", "-c", "%U %a", "/var/lib/keypress-ari").strip() == "keypress-ari 750"
    listing = m.run("find", "/var/lib/keypress-ari", "-maxdepth", "2")
    assert "/var/lib/keypress-ari/journal" in listing, listing

    # A call: its log lines in the journal (JSON) carry the call id.
    call = await test_caller.place_call("999")  # not in the catalog: refused

    def call_line() -> dict[str, Any] | None:
        return next((line for line in m.log_lines() if line.get("channel_id") == call.remote_id
                     and line.get("call_id")), None)
    line = await until(call_line, 15, "a journal line with the call's call_id")
    assert line["event"] == "unknown number; hanging up", line

    # A wedged daemon (SIGSTOP) sends no watchdog pings: systemd kills it and restarts it.
    old = info["MainPID"]
    t0 = time.monotonic()
    m.run("systemctl", "kill", "--kill-whom=main", "--signal=SIGSTOP", UNIT)

    def restarted() -> dict[str, str] | None:
        now = m.show("ActiveState", "MainPID", "NRestarts", "StatusText")
        ok = (now["MainPID"] not in ("0", old) and now["ActiveState"] == "active"
              and now["StatusText"].startswith("taking calls"))
        return now if ok else None
    after = await until(restarted, WATCHDOG_SEC + 30, "a restart by the watchdog")
    FIGURES["sigstop_to_ready_again_s"] = time.monotonic() - t0
    assert int(after["NRestarts"]) >= 1, after
    killed = " ".join(e.get("MESSAGE", "") for e in m.journal())
    assert "Watchdog timeout" in killed, killed[-2000:]

    # `systemctl stop`: SIGTERM, the daemon drains and exits 0.
    t0 = time.monotonic()
    m.run("systemctl", "stop", UNIT, timeout=60)
    FIGURES["stop_s"] = time.monotonic() - t0
    done = m.show("ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
    assert done["ActiveState"] == "inactive" and done["Result"] == "success", done
    assert done["ExecMainStatus"] == "0", done
    messages = [e.get("MESSAGE", "") for e in m.journal()]
    denied = [t for t in messages if "Permission denied" in t or "Read-only file" in t]
    assert not denied, denied


NUMBER = "18005550800"
CATALOG = """
flow_groups:
  - name: agent
    flows:
      - {key: "2", extra_tokens: {before_restart: "yes"}}
      - {key: "3", extra_tokens: {after_restart: "yes"}}
      - {key: "4", extra_tokens: {before_stop: "yes"}}
      - {key: "5", extra_tokens: {while_stopped: "yes"}}
""" + agent_route(NUMBER)


class LiveCall:
    """A call the daemon in the container bridged to the test buyer ``acme``, seen from the
    test: its two phones, the daemon's legs and bridge, its call log in PostgreSQL."""

    def __init__(self, db: asyncpg.Pool, caller: TestCaller, call: PlacedCall,
                 phone: BuyerPhone, row: asyncpg.Record) -> None:
        self.db, self.caller, self.call, self.phone = db, caller, call, phone
        self.id: str = row["id"]
        self.leg: str = row["leg"]  # the daemon's buyer leg (the ;1 of the buyer's pair)
        self.bridge: str = row["bridge"]

    async def rows(self) -> list[dict[str, Any]]:
        """The call's numbered call log rows in PostgreSQL, ``tokens`` from their detail."""
        return [{**r, "tokens": json.loads(r["tokens"] or "{}")} for r in await self.db.fetch(
            "SELECT seq, kind, flow, at, detail->'tokens' AS tokens FROM call_events "
            "WHERE call_id = $1::uuid AND seq IS NOT NULL ORDER BY seq", self.id)]

    async def row(self, kind: str, timeout: float, what: str, n: int = 1,
                  token: str | None = None) -> dict[str, Any]:
        """The ``n``-th row of ``kind`` (setting ``token``, if given), once it is written."""
        async def written() -> dict[str, Any] | None:
            found = [r for r in await self.rows()
                     if r["kind"] == kind and (token is None or token in r["tokens"])]
            return found[n - 1] if len(found) >= n else None
        row: dict[str, Any] = await until(written, timeout, what)
        return row

    async def press(self, digit: str) -> None:
        """The buyer presses ``digit``; returns once the daemon's leg received it."""
        since = self.caller.mark()
        await self.phone.press(digit)
        await self.caller.wait_event(ChannelDtmfReceived, self.leg, since=since, digit=digit)

    async def assert_up_in_stasis(self) -> None:
        """Both legs Up, in Stasis(keypress), still in the call's bridge; neither phone saw
        its call end."""
        client = self.caller.client
        for channel_id in (self.call.remote_id, self.leg):
            channel = await client.get_channel(channel_id)
            assert channel.state == "Up", channel
            assert channel.dialplan is not None and channel.dialplan.app_name == "Stasis", channel
            assert (channel.dialplan.app_data or "").startswith("keypress"), channel
        assert {self.call.remote_id, self.leg} <= set((await client.get_bridge(self.bridge))
                                                      .channels)
        ended = [e for e in self.caller.events
                 if isinstance(e, StasisEnd | ChannelDestroyed)
                 and e.channel.id in (self.call.local_id, self.phone.channel_id)]
        assert not ended, ended

    async def assert_gapless(self) -> list[str]:
        rows = await self.rows()
        seqs = [r["seq"] for r in rows]
        assert seqs == list(range(1, len(seqs) + 1)), seqs  # no gap, no duplicate
        return [r["kind"] for r in rows]


async def bridged_call(db: asyncpg.Pool, test_caller: TestCaller) -> LiveCall:
    call = await test_caller.place_call(NUMBER, wait_answer=False)
    phone = await TestBuyers.of(test_caller).next_leg("acme")
    await phone.answer()
    await test_caller.wait_event(StasisStart, call.local_id)
    row = await until(lambda: db.fetchrow(
        "SELECT id::text AS id, state->>'buyer_channel' AS leg, state->>'bridge_id' AS bridge "
        "FROM calls WHERE channel_id = $1 AND stage = 'bridged' "
        "AND state->>'stage' = 'bridged'", call.remote_id), 10, "the call is bridged")
    # The test's app subscribes to the daemon's buyer leg too: it sees the DTMF arrive there.
    await test_caller.client.subscribe(test_caller.app, f"channel:{row['leg']}")
    return LiveCall(db, test_caller, call, phone, row)


def seconds(value: str) -> float:
    """A systemd time span as ``systemctl show`` prints it (``20s``, ``1min 30s``)."""
    units = {"min": 60.0, "ms": 0.001, "s": 1.0}
    total = 0.0
    for part in value.split():
        unit = next(u for u in units if part.endswith(u))
        total += float(part.removesuffix(unit)) * units[unit]
    return total


async def test_upgrade_restart_and_stop_with_a_call_up(
        machine: Machine, db: asyncpg.Pool, test_caller: TestCaller) -> None:
    """docs/upgrading.md, "The procedure, with calls up", through the installed unit."""
    m = machine
    async with db.acquire() as conn:  # as `keypress-ari flows import` does, before the start
        await import_catalog(conn, load_catalog_yaml(CATALOG, "upgrade.yaml"))
    try:
        await m.arun("systemctl", "start", UNIT, timeout=90)
        first = m.show("MainPID", "StatusText")
        assert first["StatusText"] == "taking calls: app keypress, 1 numbers", first
        live = await bridged_call(db, test_caller)
        await live.press("2")
        await live.row("tokens_set", 10, "the press before the restart", token="before_restart")

        # systemctl restart: the old daemon drains and exits, the new one adopts the call.
        t_wall, t0 = datetime.now(UTC), time.monotonic()
        await m.arun("systemctl", "restart", UNIT, timeout=90)
        FIGURES["restart_returns_s"] = time.monotonic() - t0
        adopted = await live.row("adopted", 15, "the new daemon adopted the call")
        FIGURES["restart_to_adopted_s"] = (adopted["at"] - t_wall).total_seconds()
        second = m.show("MainPID", "ActiveState", "Result")
        assert second["MainPID"] not in ("0", first["MainPID"]), second
        assert second["ActiveState"] == "active", second

        def adopted_by_the_new_pid() -> dict[str, Any] | None:
            return next((line for line in m.log_lines(second["MainPID"])
                         if line.get("event") == "adopted calls left by a previous run"), None)
        line = await until(adopted_by_the_new_pid, 10, "the new daemon's 'adopted' log line")
        assert line["calls"] == 1, line
        await live.assert_up_in_stasis()
        await live.press("3")
        press = await live.row("key_press", 10, "the press after the restart", n=2)
        after = await live.row("tokens_set", 10, "its flow ran", token="after_restart")
        assert adopted["seq"] < press["seq"] < after["seq"], (adopted, press, after)
        kinds = await live.assert_gapless()
        assert kinds.count("adopted") == 1 and kinds.index("bridged") < kinds.index("adopted")

        # systemctl stop with the call up, right after a press reached the daemon: a clean
        # exit within TimeoutStopSec, every row written, the call left up for the next one.
        await live.press("4")
        t0 = time.monotonic()
        await m.arun("systemctl", "stop", UNIT, timeout=60)
        FIGURES["stop_with_a_call_up_s"] = stop_s = time.monotonic() - t0
        done = m.show("ActiveState", "Result", "ExecMainStatus", "ExecMainCode",
                      "TimeoutStopUSec")
        assert done["ActiveState"] == "inactive" and done["Result"] == "success", done
        assert done["ExecMainStatus"] == "0", done
        assert stop_s < seconds(done["TimeoutStopUSec"]), (stop_s, done)
        rows = await live.rows()  # read at once: the stopped daemon wrote them before exiting
        stopping = [r for r in rows if r["kind"] == "tokens_set" and "before_stop" in r["tokens"]]
        assert stopping and rows[-1]["seq"] == stopping[0]["seq"], [r["kind"] for r in rows]
        await live.assert_gapless()
        open_row = await db.fetchrow("SELECT stage, ended_at, state->>'stage' AS st FROM calls"
                                     " WHERE id = $1::uuid", live.id)
        assert (open_row["stage"], open_row["st"], open_row["ended_at"]) == \
            ("bridged", "bridged", None), open_row
        messages = [line.get("event") for line in m.log_lines(second["MainPID"])]
        assert "daemon stopped" in messages and \
            "call log not fully written at stop" not in messages, messages
        await live.assert_up_in_stasis()
        app = await test_caller.client.get_application("keypress")  # no websocket on it
        assert {live.call.remote_id, live.leg} <= set(app["channel_ids"]), app
        assert live.bridge in app["bridge_ids"], app
        # A call that arrives now: Stasis() fails at once and the dialplan goes on (Hangup).
        since = test_caller.mark()
        late = await test_caller.place_call(NUMBER, wait_answer=False)
        await test_caller.wait_event(ChannelVarset, late.remote_id, since=since, timeout=5,
                                     variable="STASISSTATUS", value="FAILED")  # after a ""
        await test_caller.wait_event(ChannelDestroyed, late.remote_id, since=since, timeout=5)
        await live.press("5")  # nobody hears it: Asterisk keeps no events for a lost app

        # The next daemon takes the call back; the caller hangs up, it ends the call.
        await m.arun("systemctl", "start", UNIT, timeout=90)
        await live.row("adopted", 15, "the next daemon adopted the call", n=2)
        await live.assert_up_in_stasis()
        await live.call.hangup()
        await live.phone.wait_hangup(10)  # the daemon hung the buyer up
        await live.row("call_ended", 10, "the call is closed")
        await m.arun("systemctl", "stop", UNIT, timeout=60)
    finally:
        m.run("systemctl", "stop", UNIT, timeout=60, check=False)
    kinds = await live.assert_gapless()
    assert kinds.count("adopted") == 2 and kinds[-1] == "call_ended", kinds
    assert kinds.count("key_press") == 3, kinds  # not the one pressed while stopped
    row = await db.fetchrow("SELECT ended_by, tokens FROM calls WHERE id = $1::uuid", live.id)
    assert row["ended_by"] == "caller", row
    assert {"before_restart", "after_restart", "before_stop"} <= set(json.loads(row["tokens"]))
    assert "while_stopped" not in json.loads(row["tokens"]), row
    print(f"\ncall log of the upgraded call: {kinds}")
