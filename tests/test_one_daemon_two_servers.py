"""One daemon, two Asterisk servers (``[ari]`` and an ``[[asterisk]]`` entry): a call on each,
each bridged to a buyer leg dialled on the call's own server; each server's calls carried
under its own owner name, reported per server by ``/readyz`` and the metrics. A restarted
daemon adopts each server's call on that server. Restarting one Asterisk ends its call and
leaves the other server's call working."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from keypress_ari.config import AsteriskEntry, Settings
from keypress_ari.daemon import Daemon
from tests.support.asterisk import AsteriskServer
from tests.support.buyers import TestBuyers
from tests.support.caller import TestCaller
from tests.support.daemon import LogWatch, RunningDaemon, daemon_settings
from tests.test_two_asterisks import CATALOG, CLUSTER, restart, second_asterisk

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]
__all__ = ["second_asterisk"]  # the fixture, used here


def two_server_settings(first: Any, second: AsteriskServer, pg_dsn: str, state: Path
                        ) -> Settings:
    settings = daemon_settings(first, pg_dsn, state_dir=state)
    entry = AsteriskEntry(name="b", url=second.base_url, user=second.ari_user,
                          password=second.ari_password, app="keypress")
    return settings.model_copy(update={"cluster": CLUSTER, "asterisk": [entry]})


async def start(settings: Settings) -> RunningDaemon:
    daemon = Daemon(settings)
    watch = LogWatch()
    await daemon.start()
    assert daemon.calllog is not None
    daemon.calllog.add_listener(watch)
    for link in daemon.links:
        assert link.core is not None
        await link.core.stream.wait_connected(10)
    return RunningDaemon(daemon, watch)


async def bridged(kp: RunningDaemon, caller: TestCaller) -> tuple[Any, Any, str]:
    """A call placed on the caller's server, its buyer leg answered on that same server."""
    call = await caller.place_call("18005550704", wait_answer=False)
    phone = await TestBuyers.of(caller).next_leg("acme")  # dialled on this server
    await phone.answer()
    call_id = await kp.watch.call_id_for(call.remote_id)
    await kp.watch.event(call_id, "bridged")
    return call, phone, call_id


@pytest.fixture
async def other_caller(second_asterisk: list[AsteriskServer]) -> AsyncIterator[TestCaller]:
    other = second_asterisk[0]
    caller = TestCaller(other.base_url, other.ari_user, other.ari_password)
    await caller.start()
    try:
        yield caller
    finally:
        await caller.close()


def sample(text: str, name: str, server: str) -> float:
    prefix = f'{name}{{server="{server}"}} '
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert lines, f"{prefix!r} not in the metrics"
    return float(lines[0][len(prefix):])


async def test_each_servers_calls_stay_on_it_and_are_adopted_after_a_restart(
        asterisk: Any, second_asterisk: list[AsteriskServer], other_caller: TestCaller,
        pg_dsn: str, db: Any, test_caller: TestCaller, tmp_path: Path) -> None:
    settings = two_server_settings(asterisk, second_asterisk[0], pg_dsn, tmp_path)
    kp = await start(settings)
    try:
        await kp.load(CATALOG)
        assert [link.server for link in kp.daemon.links] == ["default", "b"]
        _, phone_a, id_a = await bridged(kp, test_caller)
        call_b, phone_b, id_b = await bridged(kp, other_caller)

        assert kp.daemon.calllog is not None
        assert await kp.daemon.calllog.flush(10)  # the rows written, not only queued
        owners = {r["id"]: r["owner"] for r in await db.fetch(
            "SELECT id::text AS id, state->>'owner' AS owner FROM calls")}
        assert owners == {id_a: f"keypress@127.0.0.1:{asterisk.http_port}",
                          id_b: f"keypress@127.0.0.1:{second_asterisk[0].http_port}"}
        ready = await kp.daemon.readiness()
        assert ready["ready"] is True
        assert {k: (v["ready"], v["calls"]) for k, v in ready["servers"].items()} == {
            "default": (True, 1), "b": (True, 1)}
        text = kp.daemon.metrics.render()
        assert sample(text, "keypress_server_calls_active", "b") == 1.0
        assert sample(text, "keypress_server_ari_connected", "default") == 1.0
        assert "keypress_calls_active 2" in text.splitlines()
    finally:
        await kp.daemon.stop()

    kp = await start(settings)  # the calls are still bridged on their servers
    try:
        assert kp.daemon.link("default").active_calls == 1
        assert kp.daemon.link("b").active_calls == 1
        await phone_b.press("1")  # server b's buyer, on server b's adopted call
        await kp.watch.event(id_b, "disposition", disposition="sale")
        await call_b.wait_hangup(10)
        await phone_a.press("1")
        await kp.watch.event(id_a, "disposition", disposition="sale")
        for call_id in (id_a, id_b):
            row, events = await kp.stored(call_id)
            assert row.disposition == "sale"
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert [e.kind for e in events].count("adopted") == 1
    finally:
        await kp.daemon.stop()


async def test_losing_one_server_leaves_the_others_calls_alone(
        asterisk: Any, second_asterisk: list[AsteriskServer], other_caller: TestCaller,
        pg_dsn: str, test_caller: TestCaller, tmp_path: Path) -> None:
    kp = await start(two_server_settings(asterisk, second_asterisk[0], pg_dsn, tmp_path))
    try:
        await kp.load(CATALOG)
        call_a, phone_a, id_a = await bridged(kp, test_caller)
        _, _, id_b = await bridged(kp, other_caller)
        await other_caller.close()

        b = kp.daemon.link("b")
        resyncs = b.resyncs
        await restart(second_asterisk)  # server b's call ends with it
        await b.wait_resyncs(resyncs + 1, 30)  # reconnected and resynced
        await kp.watch.event(id_b, "call_ended", timeout=10)
        assert kp.daemon.link("default").resyncs == 1  # server a's stream never dropped

        await phone_a.press("1")
        await kp.watch.event(id_a, "disposition", disposition="sale")
        await call_a.wait_hangup(10)
        row, _ = await kp.stored(id_a)
        assert row.disposition == "sale"
        ready = await kp.daemon.readiness()
        assert ready["servers"]["b"]["ready"] is True and ready["ready"] is True
    finally:
        await kp.daemon.stop()


async def test_doctor_checks_every_server(asterisk: Any, second_asterisk: list[AsteriskServer],
                                          pg_dsn: str, tmp_path: Path) -> None:
    """``keypress-ari doctor`` with ``[[asterisk]]``: the ARI checks run for each server,
    named after it; a wrong second server fails the doctor, the first still passes."""
    from keypress_ari.doctor import failed, render
    from keypress_ari.doctor_probe import examine

    settings = two_server_settings(asterisk, second_asterisk[0], pg_dsn, tmp_path)
    results = await examine(settings)
    text = render(results)
    assert not failed(results), text
    for server in ("default", "b"):
        assert f"OK   ARI [{server}]: " in text and f"modules (Stasis mode) [{server}]" in text
    assert "WARN Stasis app [b]: keypress not registered" in text  # no daemon runs here
    assert text.count("PostgreSQL: reachable") == 1  # the shared checks run once

    b = settings.asterisk[0].model_copy(update={"password": SecretStr("wrong-password")})
    results = await examine(settings.model_copy(update={"asterisk": [b]}))
    text = render(results)
    assert failed(results)
    assert "FAIL ARI [b]: " in text and "refused the user (401)" in text
    assert "OK   ARI [default]: " in text
