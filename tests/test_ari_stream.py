"""EventStream fault injection against a local fake ARI websocket server (127.0.0.1 only).

The fake is deliberate: these tests break the connection in ways a real Asterisk will not
do on request (garbage frames, drops, refusals, a peer that stops answering pings).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from bench.fake_ari import FakeAriServer
from keypress_ari.ari.events import ChannelDtmfReceived, Event
from keypress_ari.ari.stream import EventStream, events_url

PASSWORD = "s3cr&t pw"


def dtmf_frame(digit: str, channel_id: str = "chan-1") -> str:
    return json.dumps(
        {
            "type": "ChannelDtmfReceived",
            "application": "keypress",
            "timestamp": "2026-01-01T00:00:00.000+0000",
            "digit": digit,
            "duration_ms": 120,
            "channel": {
                "id": channel_id,
                "name": "PJSIP/caller-00000001",
                "state": "Up",
                "caller": {"name": "", "number": "5551234"},
            },
        }
    )


@dataclass
class Recorder:
    events: list[Event] = field(default_factory=list)
    connects: int = 0
    disconnects: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_event(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    async def on_connect(self) -> None:
        self.connects += 1
        self._changed.set()

    def on_disconnect(self) -> None:
        self.disconnects += 1
        self._changed.set()

    async def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
async def fake_ari() -> AsyncIterator[FakeAriServer]:
    """The project's fake ARI (bench/fake_ari.py), served here; tests steer its knobs."""
    server = FakeAriServer()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


class Running:
    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self.task = asyncio.create_task(stream.run())

    async def stop(self, within: float = 1.0) -> None:
        async with asyncio.timeout(within):
            await self.stream.stop()
            await self.task


@pytest.fixture
async def start_stream(fake_ari: FakeAriServer) -> AsyncIterator[Callable[..., Running]]:
    running: list[Running] = []

    def start(recorder: Recorder, **kw: Any) -> Running:
        kw.setdefault("backoff_initial", 0.05)
        kw.setdefault("backoff_cap", 0.2)
        stream = EventStream(
            fake_ari.base_url,
            "keypress",
            PASSWORD,
            apps=kw.pop("apps", "keypress"),
            on_event=recorder.on_event,
            on_connect=recorder.on_connect,
            on_disconnect=recorder.on_disconnect,
            **kw,
        )
        run = Running(stream)
        running.append(run)
        return run

    yield start
    for run in running:
        await run.stop(within=3.0)


def test_events_url() -> None:
    assert events_url("http://127.0.0.1:8088/ari/", ["a", "b c"]) == (
        "ws://127.0.0.1:8088/ari/events?app=a,b%20c"
    )
    assert events_url("https://h/ari", ["a"]) == "wss://h/ari/events?app=a"


async def test_auth_header_and_no_password_in_logs(
    fake_ari: FakeAriServer, start_stream: Callable[..., Running]
) -> None:
    recorder = Recorder()
    with capture_logs() as logs:
        run = start_stream(recorder, apps=["keypress", "other"])
        conn = await fake_ari.fake.next_connection()
        await run.stream.wait_connected(5)
        assert run.stream.connected
        expected = base64.b64encode(f"keypress:{PASSWORD}".encode()).decode()
        assert conn.headers["Authorization"] == f"Basic {expected}"
        assert conn.query == {"app": "keypress,other"}
        await conn.send("garbage")
        await conn.send(dtmf_frame("1"))
        await recorder.until(lambda: len(recorder.events) == 1)
        await conn.ws.close()
        await fake_ari.fake.next_connection()
        await run.stop()
    assert logs, "expected some log lines"
    for entry in logs:
        assert PASSWORD not in repr(entry)
        assert expected not in repr(entry)
    assert PASSWORD not in repr(run.stream)


async def test_garbage_frames_are_skipped(
    fake_ari: FakeAriServer, start_stream: Callable[..., Running]
) -> None:
    recorder = Recorder()
    with capture_logs() as logs:
        start_stream(recorder)
        conn = await fake_ari.fake.next_connection()
        await conn.send("{not json")
        await conn.send("[1, 2]")
        await conn.send(json.dumps({"no": "type"}))
        await conn.send(json.dumps({"type": "StasisStart", "application": "a", "timestamp": "t"}))
        await conn.ws.send_bytes(b"\x00\x01")
        await conn.send(dtmf_frame("7"))
        await recorder.until(lambda: len(recorder.events) == 1)
    (event,) = recorder.events
    assert isinstance(event, ChannelDtmfReceived) and event.digit == "7"
    garbage = [e for e in logs if e["event"] == "ari.events.garbage"]
    assert len(garbage) == 5 and all(e["log_level"] == "warning" for e in garbage)
    assert any(e.get("event_type") == "StasisStart" for e in garbage)
    assert recorder.connects == 1 and recorder.disconnects == 0


async def test_callback_errors_do_not_kill_the_stream(
    fake_ari: FakeAriServer, start_stream: Callable[..., Running]
) -> None:
    recorder = Recorder()
    original = recorder.on_event

    def flaky(event: Event) -> None:
        original(event)
        if len(recorder.events) == 1:
            raise RuntimeError("handler bug")

    recorder.on_event = flaky  # type: ignore[method-assign]
    with capture_logs() as logs:
        start_stream(recorder)
        conn = await fake_ari.fake.next_connection()
        await conn.send(dtmf_frame("1"))
        await conn.send(dtmf_frame("2"))
        await recorder.until(lambda: len(recorder.events) == 2)
    assert [e.digit for e in recorder.events if isinstance(e, ChannelDtmfReceived)] == ["1", "2"]
    assert any(e["event"] == "ari.events.callback_failed" for e in logs)


async def test_reconnects_after_the_server_drops(
    fake_ari: FakeAriServer, start_stream: Callable[..., Running]
) -> None:
    recorder = Recorder()
    run = start_stream(recorder)
    first = await fake_ari.fake.next_connection()
    await recorder.until(lambda: recorder.connects == 1)
    await first.ws.close()  # server-side close
    second = await fake_ari.fake.next_connection()
    await recorder.until(lambda: recorder.connects == 2)
    assert recorder.disconnects == 1
    await second.send(dtmf_frame("3"))
    await recorder.until(lambda: len(recorder.events) == 1)
    # An abrupt drop (no close frame) is noticed too.
    transport = second.ws._req.transport if second.ws._req else None
    assert transport is not None
    transport.abort()
    await fake_ari.fake.next_connection()
    await recorder.until(lambda: recorder.connects == 3)
    await run.stream.wait_connected(5)
    assert run.stream.connections == 3


class ClientAttempts:
    """Counts the stream's failed connection attempts, seen from the client side."""

    def __init__(self) -> None:
        self.failures = 0
        self._changed = asyncio.Event()
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_exception.append(self._on_exception)

    async def _on_exception(self, *_: Any) -> None:
        self.failures += 1
        self._changed.set()

    async def until_failures(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while self.failures < count:
                self._changed.clear()
                await self._changed.wait()


async def test_reconnects_after_refusals(
    fake_ari: FakeAriServer, start_stream: Callable[..., Running]
) -> None:
    attempts = ClientAttempts()
    async with aiohttp.ClientSession(trace_configs=[attempts.trace]) as session:
        recorder = Recorder()
        start_stream(recorder, session=session)
        conn = await fake_ari.fake.next_connection()
        await recorder.until(lambda: recorder.connects == 1)
        # Down: the port refuses connections.
        await fake_ari.stop_listening()
        await conn.ws.close()
        await recorder.until(lambda: recorder.disconnects == 1)
        await attempts.until_failures(3)
        # Up again but answering 503 to the handshake.
        fake_ari.fake.reject_status = 503
        seen = fake_ari.fake.attempts
        await fake_ari.listen()
        await fake_ari.fake.until_attempts(seen + 2)
        assert recorder.connects == 1
        # Healthy again.
        fake_ari.fake.reject_status = None
        await fake_ari.fake.next_connection()
        await recorder.until(lambda: recorder.connects == 2)


async def test_dead_peer_is_noticed_by_the_heartbeat(
    fake_ari: FakeAriServer, start_stream: Callable[..., Running]
) -> None:
    fake_ari.fake.read_frames = False  # the server stops reading: pings go unanswered
    recorder = Recorder()
    start_stream(recorder, heartbeat=0.2)
    await fake_ari.fake.next_connection()
    await recorder.until(lambda: recorder.connects == 1)
    await recorder.until(lambda: recorder.disconnects == 1, timeout=3)
    await fake_ari.fake.next_connection(timeout=3)


async def test_on_connect_failure_reconnects(
    fake_ari: FakeAriServer, start_stream: Callable[..., Running]
) -> None:
    recorder = Recorder()
    original = recorder.on_connect

    async def flaky_resync() -> None:
        await original()
        if recorder.connects == 1:
            raise RuntimeError("resync failed")

    recorder.on_connect = flaky_resync  # type: ignore[method-assign]
    run = start_stream(recorder)
    await fake_ari.fake.next_connection()
    await fake_ari.fake.next_connection()
    await recorder.until(lambda: recorder.connects == 2)
    await run.stream.wait_connected(5)


async def test_stop_is_prompt_when_connected(
    fake_ari: FakeAriServer, start_stream: Callable[..., Running]
) -> None:
    recorder = Recorder()
    run = start_stream(recorder)
    conn = await fake_ari.fake.next_connection()
    await run.stream.wait_connected(5)
    await run.stop(within=1.0)
    assert not run.stream.connected and recorder.disconnects == 1
    await asyncio.wait_for(conn.closed.wait(), 2)


async def test_stop_is_prompt_during_backoff(
    fake_ari: FakeAriServer, start_stream: Callable[..., Running]
) -> None:
    recorder = Recorder()
    run = start_stream(recorder, backoff_initial=10.0, backoff_cap=10.0)
    conn = await fake_ari.fake.next_connection()
    await conn.ws.close()
    await recorder.until(lambda: recorder.disconnects == 1)  # now sleeping 5-10 s
    await run.stop(within=0.5)


async def test_stop_is_prompt_during_a_hanging_handshake(
    fake_ari: FakeAriServer, start_stream: Callable[..., Running]
) -> None:
    fake_ari.fake.hang_handshake = True
    recorder = Recorder()
    run = start_stream(recorder, connect_timeout=30.0)
    await fake_ari.fake.until_attempts(1)
    await run.stop(within=0.5)
    assert recorder.connects == 0


async def test_stop_before_run(fake_ari: FakeAriServer) -> None:
    stream = EventStream(fake_ari.base_url, "u", "p", apps="a", on_event=lambda e: None)
    await stream.stop()
    await asyncio.wait_for(stream.run(), 1.0)
    assert fake_ari.fake.attempts == 0
    with pytest.raises(TimeoutError):
        await stream.wait_connected(0.01)


def test_needs_an_app() -> None:
    with pytest.raises(ValueError):
        EventStream("http://127.0.0.1:1/ari", "u", "p", apps=[], on_event=lambda e: None)
