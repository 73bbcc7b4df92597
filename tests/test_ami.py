"""The AMI client's wire format and call tracker (pure), and the client under faults against
a small AMI server on 127.0.0.1 (fault injection: a refused login, a dropped connection, a
silent server, an error answer); the happy path on the real Asterisk is test_ami_mode.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from keypress_ari.ami.client import AmiClient, AmiError
from keypress_ari.ami.protocol import (
    MAX_LINE,
    MAX_MESSAGE,
    AmiParser,
    AmiProtocolError,
    encode_action,
)
from keypress_ari.ami.tracker import CallGone, CallTracker, DigitPressed, NativeBridge

# ---- wire format --------------------------------------------------------------------------


def test_parser_splits_messages_anywhere_and_keeps_repeated_keys() -> None:
    data = (b"Response: Success\r\nActionID: 1\r\nMessage: ok\r\n\r\n"
            b"Event: VarSet\r\nChanVariable: A=1\r\nChanVariable: B=2\r\n\r\n")
    parser = AmiParser()
    out = []
    for i in range(len(data)):  # one byte at a time
        out += parser.feed(data[i:i + 1])
    assert out == [{"Response": "Success", "ActionID": "1", "Message": "ok"},
                   {"Event": "VarSet", "ChanVariable": "A=1\nB=2"}]


def test_parser_limits() -> None:
    with pytest.raises(AmiProtocolError, match=str(MAX_LINE)):
        AmiParser().feed(b"x" * (MAX_LINE + 1))
    parser = AmiParser()
    with pytest.raises(AmiProtocolError, match=str(MAX_MESSAGE)):
        for _ in range(MAX_MESSAGE // 100 + 2):
            parser.feed(b"Key: " + b"v" * 95 + b"\r\n")


def test_encode_refuses_header_injection() -> None:
    assert encode_action("Hangup", "7", {"Channel": "PJSIP/a-1"}) == (
        b"Action: Hangup\r\nActionID: 7\r\nChannel: PJSIP/a-1\r\n\r\n")
    with pytest.raises(ValueError):
        encode_action("Hangup", "7", {"Channel": "x\r\nAction: Originate"})


# ---- tracker ------------------------------------------------------------------------------

def dial_call(t: CallTracker, n: int) -> list[object]:
    link, callee = f"{n}.1", f"{n}.2"
    return [t.feed(m) for m in (
        {"Event": "Newchannel", "Channel": f"PJSIP/in-{n}", "Uniqueid": link, "Linkedid": link},
        {"Event": "DialBegin", "Channel": f"PJSIP/in-{n}", "Uniqueid": link, "Linkedid": link,
         "Exten": "18005550100", "CallerIDNum": "5551234", "CallerIDName": "<unknown>",
         "DestChannel": f"PJSIP/acme-{n}", "DestUniqueid": callee, "DestLinkedid": link},
        {"Event": "DialEnd", "Uniqueid": link, "DestUniqueid": callee, "DialStatus": "ANSWER",
         "Timestamp": "1700000000.5"},
        {"Event": "BridgeEnter", "Uniqueid": callee, "Linkedid": link,
         "BridgeUniqueid": f"b{n}", "BridgeTechnology": "simple_bridge"},
    )]


def test_tracker_reports_presses_by_leg() -> None:
    t = CallTracker()
    assert dial_call(t, 1) == [None, None, None, None]
    sent = t.feed({"Event": "DTMFEnd", "Uniqueid": "1.1", "Linkedid": "1.1",
                   "Digit": "5", "Direction": "Sent", "DurationMs": "120"})
    assert sent is None  # the peer's side of the same key
    got = t.feed({"Event": "DTMFEnd", "Channel": "PJSIP/acme-1", "Uniqueid": "1.2",
                  "Linkedid": "1.1", "Digit": "5", "Direction": "Received",
                  "DurationMs": "120"})
    assert got == DigitPressed(
        linkedid="1.1", uniqueid="1.2", channel="PJSIP/acme-1", digit="5", duration_ms=120,
        leg="buyer", caller_channel="PJSIP/in-1", buyer_channel="PJSIP/acme-1",
        caller_uniqueid="1.1", buyer_uniqueid="1.2", number="18005550100",
        caller_number="5551234", caller_name="", answered_at=1700000000.5)
    stray = t.feed({"Event": "DTMFEnd", "Uniqueid": "9.9", "Linkedid": "9.9", "Digit": "1",
                    "Direction": "Received"})
    assert stray is None  # a channel of no dialled call


def test_tracker_warns_once_per_native_bridge() -> None:
    t = CallTracker()
    enter = {"Event": "BridgeEnter", "Uniqueid": "1.1", "Linkedid": "1.1", "Channel": "X",
             "BridgeUniqueid": "b", "BridgeTechnology": "native_rtp"}
    first = t.feed(enter)
    assert isinstance(first, NativeBridge) and "bridge_native_rtp" in first.warning
    assert t.feed({**enter, "Uniqueid": "1.2"}) is None


def test_tracker_forgets_ended_calls() -> None:
    t = CallTracker()
    for n in range(10_000):
        dial_call(t, n)
    assert t.calls == 10_000
    gone = []
    for n in range(10_000):
        assert t.feed({"Event": "Hangup", "Uniqueid": f"{n}.2", "Linkedid": f"{n}.1"}) is None
        gone.append(t.feed({"Event": "Hangup", "Uniqueid": f"{n}.1", "Linkedid": f"{n}.1"}))
    assert gone == [CallGone(f"{n}.1") for n in range(10_000)]
    assert t.calls == 0 and not t._linked


# ---- client under faults -----------------------------------------------------------------

class FakeAmi:
    """Speaks just enough AMI: a banner, Login (accepted once ``accept`` is set), and
    ``answers`` for other actions by name (None: never answer)."""

    def __init__(self) -> None:
        self.accept = True
        self.banner = True
        self.answers: dict[str, bytes | None] = {}
        self.logins = 0
        self.connects = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.changed = asyncio.Condition()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def until(self, predicate: object, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(predicate)  # type: ignore[arg-type]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with self.changed:
            self.writers.append(writer)
            self.connects += 1
            self.changed.notify_all()
        if self.banner:
            writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        parser = AmiParser()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                for m in parser.feed(data):
                    await self._answer(m, writer)

    async def _answer(self, m: dict[str, str], writer: asyncio.StreamWriter) -> None:
        aid = m.get("ActionID", "").encode()
        if m.get("Action") == "Login":
            async with self.changed:
                self.logins += 1
                self.changed.notify_all()
            writer.write(b"Response: " + (b"Success" if self.accept else b"Error")
                         + b"\r\nActionID: " + aid + b"\r\nMessage: "
                         + (b"Authentication accepted" if self.accept
                            else b"Authentication failed") + b"\r\n\r\n")
            return
        answer = self.answers.get(m.get("Action", ""), b"Response: Success\r\n")
        if answer is not None:
            writer.write(answer + b"ActionID: " + aid + b"\r\n\r\n")

    def drop_all(self) -> None:
        for w in self.writers:
            w.close()
        self.writers.clear()

    async def close(self) -> None:
        self.drop_all()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def fake_ami() -> AsyncIterator[tuple[FakeAmi, int]]:
    fake = FakeAmi()
    port = await fake.start()
    yield fake, port
    await fake.close()


async def running(port: int, events: list[dict[str, str]], **kw: float
                  ) -> tuple[AmiClient, asyncio.Task[None]]:
    client = AmiClient("127.0.0.1", port, "u", "top-secret", on_event=events.append,
                       backoff_initial=0.05, backoff_cap=0.2, **kw)  # type: ignore[arg-type]
    return client, asyncio.create_task(client.run())


async def stop(client: AmiClient, task: asyncio.Task[None]) -> None:
    await client.stop()
    await asyncio.wait_for(task, 5)


async def test_login_refused_is_reported_then_retried(fake_ami: tuple[FakeAmi, int]) -> None:
    fake, port = fake_ami
    fake.accept = False
    client, task = await running(port, [])
    await fake.until(lambda: fake.logins >= 2)
    assert not client.connected and client.login_failures >= 1
    assert "Authentication failed" in client.last_error and "top-secret" not in repr(client)
    fake.accept = True
    await client.wait_connected(5)
    await stop(client, task)


async def test_reconnects_after_a_drop_and_fails_pending_actions(
        fake_ami: tuple[FakeAmi, int]) -> None:
    fake, port = fake_ami
    fake.answers["Ping"] = None  # never answered
    client, task = await running(port, [])
    await client.wait_connected(5)
    pending = asyncio.create_task(client.action("Ping"))
    await asyncio.sleep(0)  # let it be written
    fake.drop_all()
    with pytest.raises(AmiError, match="lost"):
        await asyncio.wait_for(pending, 5)
    await fake.until(lambda: fake.logins >= 2)
    await client.wait_connected(5)
    assert client.connections == 2
    await stop(client, task)


async def test_action_errors_and_timeouts(fake_ami: tuple[FakeAmi, int]) -> None:
    fake, port = fake_ami
    fake.answers["Hangup"] = b"Response: Error\r\nMessage: No such channel\r\n"
    fake.answers["Slow"] = None
    client, task = await running(port, [], action_timeout=0.2)
    await client.wait_connected(5)
    with pytest.raises(AmiError, match="No such channel"):
        await client.action("Hangup", Channel="PJSIP/x-1")
    with pytest.raises(AmiError, match=r"within 0\.2 s"):
        await client.action("Slow")
    assert (await client.action("Getvar", Variable="X"))["Response"] == "Success"
    await stop(client, task)


async def test_a_silent_server_times_out_and_is_retried(
        fake_ami: tuple[FakeAmi, int]) -> None:
    fake, port = fake_ami
    fake.banner = False
    client, task = await running(port, [], connect_timeout=0.2)
    await fake.until(lambda: fake.connects >= 2, timeout=5)  # it came back
    assert not client.connected
    await stop(client, task)


async def test_events_arrive_in_order(fake_ami: tuple[FakeAmi, int]) -> None:
    fake, port = fake_ami
    events: list[dict[str, str]] = []
    all_in = asyncio.Event()

    def on_event(message: dict[str, str]) -> None:
        events.append(message)
        if len(events) == 1000:
            all_in.set()

    client = AmiClient("127.0.0.1", port, "u", "p", on_event=on_event)
    task = asyncio.create_task(client.run())
    await client.wait_connected(5)
    fake.writers[-1].write(b"".join(b"Event: DTMFEnd\r\nDigit: %d\r\n\r\n" % (i % 10)
                                    for i in range(1000)))
    await asyncio.wait_for(all_in.wait(), 5)
    assert [e["Digit"] for e in events] == [str(i % 10) for i in range(1000)]
    await stop(client, task)


async def test_a_peer_that_stops_answering_is_noticed(fake_ami: tuple[FakeAmi, int]) -> None:
    """A connection that stays open but goes silent (a dead host) fails its keep-alive Ping
    and is replaced."""
    fake, port = fake_ami
    fake.answers["Ping"] = None
    client, task = await running(port, [], action_timeout=0.2, ping_interval=0.1)
    await client.wait_connected(5)
    await fake.until(lambda: fake.logins >= 2)
    assert "Ping" in client.last_error
    await stop(client, task)


def test_a_new_login_forgets_the_channels_it_does_not_list() -> None:
    t = CallTracker()
    dial_call(t, 1)
    dial_call(t, 2)
    t.begin_listing()  # AMI came back: call 1 is still up, call 2 died meanwhile
    for uid, name in (("1.1", "PJSIP/in-1"), ("1.2", "PJSIP/acme-1")):
        t.feed({"Event": "CoreShowChannel", "Uniqueid": uid, "Linkedid": "1.1",
                "Channel": name})
    t.feed({"Event": "Newchannel", "Uniqueid": "3.1", "Linkedid": "3.1", "Channel": "X"})
    t.end_listing()
    assert t.has_channels("1.1") and t.has_channels("3.1")  # listed / born meanwhile
    assert not t.has_channels("2.1") and t.calls == 2
    t.expect("9.1", "PJSIP/in-9", "PJSIP/acme-9", "18005550100", None)
    t.begin_listing()
    t.end_listing()
    assert not t.has_channels("9.1") and t.calls == 1  # expected: kept for its owner to close


async def test_an_event_flood_loses_nothing_and_actions_still_answer(
        fake_ami: tuple[FakeAmi, int]) -> None:
    """50,000 events at once (a busy Asterisk): every one reaches the callback in order and
    an action sent meanwhile gets its answer after them, within its timeout."""
    fake, port = fake_ami
    events: list[dict[str, str]] = []
    client, task = await running(port, events)
    await client.wait_connected(5)
    flood = 50_000
    fake.writers[-1].write(b"".join(
        b"Event: Newexten\r\nUniqueid: 1.%d\r\nLinkedid: 1.%d\r\nExtension: s\r\n\r\n"
        % (i, i) for i in range(flood)))
    reply = await client.action("Ping")
    assert reply.get("Response") == "Success"
    assert len(events) == flood  # the answer came behind the whole flood
    assert [e["Uniqueid"] for e in events[:3]] == ["1.0", "1.1", "1.2"]
    assert events[-1]["Uniqueid"] == f"1.{flood - 1}"
    await stop(client, task)
