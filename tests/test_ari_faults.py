"""ARI faults on the real Asterisk: the daemon's ARI connection goes through a loopback TCP
proxy the test cuts; Asterisk itself is restarted; one call's ARI request is slow; a caller
floods keys. Every test asserts on the call log rows, not only on "no exception"."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from keypress_ari.ari.events import ChannelDtmfReceived, StasisStart
from keypress_ari.config import AriSettings
from keypress_ari.daemon import Daemon
from tests.support.asterisk import AsteriskServer
from tests.support.buyers import TestBuyers
from tests.support.caller import TestCaller
from tests.support.daemon import LogWatch, RunningDaemon, daemon_settings
from tests.support.tcpproxy import TcpProxy

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]

CATALOG = """
flow_groups:
  - name: press-one
    flows:
      - {key: "2", disposition: not_interested}
      - {key: no_key_press, disposition: no_response}
  - name: agent
    flows:
      - {key: "1", disposition: sale}
  - name: caller-keys
    flows:
      - {key: "1", extra_tokens: {pressed: "yes"}}
routers:
  - {name: long, prompt: "sound:tt-monkeys", press_1_timeout: 1, flow_group: press-one}
  - {name: short, prompt: "sound:beep", press_1_timeout: 1, flow_group: press-one}
  - {name: live, request_key_press: false, buyers: [acme]}
  - {name: auto, request_key_press: false, buyers: [answer]}
buyers:
  - {name: acme, endpoint: "Local/acme@keypress-test-buyers/n",
     forwards_to_external_agent: true, flow_group: agent}
  - {name: answer, endpoint: "Local/answer@keypress-buyers/n"}
numbers:
  - {number: "500", router: long}
  - {number: "501", router: short}
  - {number: "502", router: live}
  - {number: "503", router: auto, keypress_controls: true, flow_group: caller-keys}
"""


async def start_daemon(asterisk: AsteriskServer, dsn: str, *, ari_port: int | None = None,
                       catalog: str | None = None, ami: bool = False,
                       **calls: Any) -> RunningDaemon:
    """A daemon reconnecting fast (ARI, and AMI when ``ami``), with ``catalog`` loaded."""
    settings = daemon_settings(asterisk, dsn, ami=ami, **calls)
    port = ari_port or asterisk.http_port
    settings.ari = AriSettings(url=f"http://127.0.0.1:{port}/ari", user=asterisk.ari_user,
                               password=asterisk.ari_password, reconnect_max_backoff=0.3)
    settings.ami = settings.ami.model_copy(update={"reconnect_max_backoff": 0.3})
    d = Daemon(settings)
    watch = LogWatch()
    await d.start()
    assert d.calllog is not None and d.stream is not None
    d.calllog.add_listener(watch)
    await d.wait_resyncs(1, 10)
    if d.ami is not None:
        await d.ami.wait_connected(10)
    running = RunningDaemon(d, watch)
    await running.load(catalog or CATALOG)
    return running


async def shut_down(caller: TestCaller, kp: RunningDaemon,
                    *servers: AsteriskServer | None) -> None:
    """After an Asterisk restart test: the caller, the daemon, then every Asterisk."""
    await caller.close()
    await kp.daemon.stop()
    for server in servers:
        if server is not None:
            await server.stop()


@pytest.fixture
async def proxied(asterisk: AsteriskServer, pg_dsn: str, db: Any) -> AsyncIterator[
        tuple[RunningDaemon, TcpProxy]]:
    proxy = TcpProxy("127.0.0.1", asterisk.http_port)
    await proxy.start()
    kp = await start_daemon(asterisk, pg_dsn, ari_port=proxy.port)
    try:
        yield kp, proxy
    finally:
        proxy.refuse(False)
        await asterisk.cleanup_channels()
        await kp.daemon.stop()
        await proxy.stop()


async def test_websocket_cut_during_a_prompt(proxied: tuple[RunningDaemon, TcpProxy],
                                             test_caller: TestCaller) -> None:
    kp, proxy = proxied
    call = await test_caller.place_call("500")
    call_id = await kp.watch.call_id_for(call.remote_id)
    await kp.watch.event(call_id, "prompt_started")
    proxy.cut()
    await kp.daemon.wait_resyncs(2, 10)
    await call.press("2")
    await call.wait_hangup(10)
    await kp.watch.event(call_id, "call_ended")
    kinds = kp.watch.kinds(call_id)
    assert kinds.count("key_press") == 1 and "disposition" in kinds


async def test_a_timeout_due_while_disconnected_fires_on_resume(
        proxied: tuple[RunningDaemon, TcpProxy], test_caller: TestCaller) -> None:
    kp, proxy = proxied
    call = await test_caller.place_call("501")
    call_id = await kp.watch.call_id_for(call.remote_id)
    await kp.watch.event(call_id, "prompt_finished")
    proxy.refuse(True)
    proxy.cut()
    await kp.watch.event(call_id, "timeout_deferred")  # the 1 s timeout came due meanwhile
    assert kp.daemon.dispatcher is not None and not kp.daemon.stream.connected  # type: ignore[union-attr]
    proxy.refuse(False)
    await call.wait_hangup(10)
    await kp.watch.event(call_id, "disposition")  # rows reach the log a linger after
    events = kp.watch.events(call_id)
    kinds = [e.kind for e in events]
    assert kinds.index("timeout_deferred") < kinds.index("timeout") < kinds.index("disposition")
    assert next(e for e in events if e.kind == "disposition").detail["disposition"] == \
        "no_response"


async def test_websocket_cut_during_a_bridged_call(proxied: tuple[RunningDaemon, TcpProxy],
                                                   test_caller: TestCaller) -> None:
    kp, proxy = proxied
    buyers = TestBuyers(test_caller)
    call = await test_caller.place_call("502", wait_answer=False)
    phone = await buyers.next_leg("acme")
    await phone.answer()
    await test_caller.wait_event(StasisStart, call.local_id)
    call_id = await kp.watch.call_id_for(call.remote_id)
    await kp.watch.event(call_id, "bridged")
    proxy.reset()
    await kp.daemon.wait_resyncs(2, 10)
    await phone.press("1")
    await call.wait_hangup(10)
    disposition = await kp.watch.event(call_id, "disposition")
    assert disposition.detail["disposition"] == "sale"


async def test_asterisk_restart(pg_dsn: str, db: Any) -> None:
    first = AsteriskServer.on_free_ports()
    await first.start()
    kp = await start_daemon(first, pg_dsn)
    ports: dict[str, int] = {"http_port": first.http_port, "ami_port": first.ami_port,
             "sip_port": first.sip_port, "rtp_start": first.rtp_start,
             "rtp_end": first.rtp_end}
    second: AsteriskServer | None = None
    caller = TestCaller(first.base_url, first.ari_user, first.ari_password)
    try:
        await caller.start()
        call = await caller.place_call("503", wait_answer=False)
        call_id = await kp.watch.call_id_for(call.remote_id)
        await kp.watch.event(call_id, "bridged")
        await caller.close()
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)  # a crash: no StasisEnd, nothing said
        await first.stop()
        second = AsteriskServer(**ports)  # type: ignore[arg-type]  # ints, by name
        await second.start()
        await kp.daemon.wait_resyncs(2, 20)
        ended = await kp.watch.event(call_id, "call_ended")
        assert ended.detail["cause"] == "gone while disconnected"
        caller = TestCaller(second.base_url, second.ari_user, second.ari_password)
        await caller.start()
        again = await caller.place_call("503", wait_answer=False)
        again_id = await kp.watch.call_id_for(again.remote_id)
        await kp.watch.event(again_id, "bridged")  # new calls are taken
    finally:
        await shut_down(caller, kp, first, second)


async def test_a_slow_ari_request_does_not_hold_other_calls(
        daemon: RunningDaemon, test_caller: TestCaller) -> None:
    await daemon.load(CATALOG)
    assert daemon.daemon.ari is not None
    ari = daemon.daemon.ari
    release = asyncio.Event()
    stuck: list[str] = []
    real_play = ari.play

    async def slow_play(channel_id: str, media: Any, **kw: Any) -> Any:
        if not stuck:  # the first call's prompt hangs (fault injection)
            stuck.append(channel_id)
            await release.wait()
        return await real_play(channel_id, media, **kw)

    ari.play = slow_play  # type: ignore[method-assign]
    try:
        first = await test_caller.place_call("501")
        first_id = await daemon.watch.call_id_for(first.remote_id)
        second = await test_caller.place_call("501")
        second_id = await daemon.watch.call_id_for(second.remote_id)
        await daemon.watch.event(second_id, "prompt_started")
        await second.press("2")
        await daemon.watch.event(second_id, "call_ended")
        assert "prompt_started" not in daemon.watch.kinds(first_id)
    finally:
        release.set()
    await daemon.watch.event(first_id, "prompt_started")


async def test_a_key_flood_is_rate_limited(daemon_factory: Any, test_caller: TestCaller) -> None:
    kp: RunningDaemon = await daemon_factory(max_presses_per_second=2.0, press_burst=3)
    await kp.load(CATALOG)
    call = await test_caller.place_call("503", wait_answer=False)
    await test_caller.wait_event(StasisStart, call.local_id)
    call_id = await kp.watch.call_id_for(call.remote_id)
    await kp.watch.event(call_id, "bridged")
    presses = 12
    since = test_caller.mark()
    await call.press("1" * presses, duration_ms=60, between_ms=60)
    for _ in range(presses):  # every digit reached the daemon's channel
        since = test_caller.events.index(await test_caller.wait_event(
            ChannelDtmfReceived, call.remote_id, since=since)) + 1
    await call.hangup()
    await kp.watch.event(call_id, "call_ended")
    events = kp.watch.events(call_id)
    handled = [e for e in events if e.kind == "key_press" and not e.detail.get("ignored")]
    limited = [e for e in events if e.kind == "key_press" and e.detail.get("ignored")]
    dropped = sum(e.detail["dropped"] for e in events if e.kind == "rate_limited")
    assert limited and all("rate limited" in e.detail["reason"] for e in limited)
    assert len(limited) == len([e for e in events if e.kind == "rate_limited"])  # once a burst
    assert len(handled) + dropped == presses  # every press accounted for
    assert len(handled) >= 3


async def test_a_slow_ari_link_delays_but_loses_nothing(
        proxied: tuple[RunningDaemon, TcpProxy], test_caller: TestCaller) -> None:
    kp, proxy = proxied
    proxy.delay = 0.2  # every chunk between the daemon and Asterisk, both ways
    call = await test_caller.place_call("500")
    call_id = await kp.watch.call_id_for(call.remote_id)
    await kp.watch.event(call_id, "prompt_started")
    await call.press("2")
    await call.wait_hangup(15)
    await kp.watch.event(call_id, "call_ended")
    proxy.delay = 0.0
    row, events = await kp.stored(call_id)
    assert row.disposition == "not_interested"
    assert [e.kind for e in events].count("key_press") == 1


async def test_a_dial_whose_outcome_is_lost_fails_over(
        daemon: RunningDaemon, test_caller: TestCaller, monkeypatch: pytest.MonkeyPatch) -> None:
    from keypress_ari.ari import events as ev
    from keypress_ari.calls import dialing
    from keypress_ari.calls.call import Call

    await daemon.load("""
routers:
  - {name: two, request_key_press: false, buyers: [mute, answer]}
buyers:
  - {name: mute, endpoint: "Local/noanswer@keypress-buyers/n", ring_timeout: 1}
  - {name: answer, endpoint: "Local/answer@keypress-buyers/n"}
numbers:
  - {number: "510", router: two}
""")
    monkeypatch.setattr(dialing, "DIAL_GRACE", 0.5)
    real_handle = Call.handle
    dropped: list[str] = []
    lost = (ev.Dial, ev.ChannelDestroyed, ev.StasisEnd, ev.ChannelHangupRequest)

    async def lossy(self: Call, event: object) -> None:  # fault injection: outcome lost
        channel = getattr(event, "peer", None) or getattr(event, "channel", None)
        if isinstance(event, lost) and channel is not None and "noanswer" in channel.name:
            dropped.append(type(event).__name__)
            return
        await real_handle(self, event)

    monkeypatch.setattr(Call, "handle", lossy)
    call = await test_caller.place_call("510", wait_answer=False)
    call_id = await daemon.watch.call_id_for(call.remote_id)
    failed = await daemon.watch.event(call_id, "buyer_failed", timeout=15)
    assert failed.detail["reason"] == "no outcome reported in time"
    await daemon.watch.event(call_id, "bridged", buyer="answer")
    assert dropped  # the outcome events were really withheld
