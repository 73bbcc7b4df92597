"""The ARI client and event models against the real Asterisk (test ports, 127.0.0.1)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from keypress_ari.ari.client import AriClient
from keypress_ari.ari.errors import AriBadRequest, AriConflict, AriNotFound, AriUnavailable
from keypress_ari.ari.events import (
    ApplicationReplaced,
    BridgeDestroyed,
    Channel,
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelEnteredBridge,
    ChannelLeftBridge,
    ChannelTalkingFinished,
    ChannelTalkingStarted,
    Dial,
    Event,
    EventParseError,
    PlaybackFinished,
    StasisEnd,
    StasisStart,
    UnknownEvent,
    channel_id_of,
    parse_event,
)
from tests.support.asterisk import AsteriskServer
from tests.support.caller import PlacedCall, TestCaller

pytestmark = pytest.mark.asterisk

_ids = itertools.count(1)


def _is(kind: type[Any], channel_id: str, **fields: Any) -> Any:
    def predicate(event: Event) -> bool:
        return (
            isinstance(event, kind)
            and channel_id_of(event) == channel_id
            and all(getattr(event, k) == v for k, v in fields.items())
        )

    return predicate


async def held_buyer(caller: TestCaller, exten: str = "answer") -> str:
    """Originate Local/EXTEN@keypress-buyers; return the ;1 half once it is in kp-test."""
    channel_id = f"held-{next(_ids)}"
    since = caller.mark()
    await caller.client.originate(
        f"Local/{exten}@keypress-buyers",
        channel_id=channel_id,
        other_channel_id=f"{channel_id}-2",
    )
    await caller.wait_event(StasisStart, channel_id, timeout=5, since=since)
    return channel_id


@pytest.fixture
async def fake_daemon(
    test_caller: TestCaller, asterisk: AsteriskServer
) -> AsyncIterator[TestCaller]:
    """Plays the daemon: registers the ``keypress`` app that keypress-inbound hands calls to."""
    daemon = TestCaller(asterisk.base_url, asterisk.ari_user, asterisk.ari_password, app="keypress")
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.close()


async def call_into_daemon(
    caller: TestCaller, daemon: TestCaller, number: str, **kw: Any
) -> PlacedCall:
    """place_call, with the fake daemon answering the ;2 half as the real daemon must."""
    since = daemon.mark()
    placing = asyncio.create_task(caller.place_call(number, **kw))
    start = await daemon.wait_event(StasisStart, timeout=5, since=since)
    await daemon.client.answer(start.channel.id)
    call = await asyncio.wait_for(placing, 5)
    assert call.answered and call.remote_id == start.channel.id
    return call


async def test_ping(asterisk: AsteriskServer) -> None:
    async with AriClient(asterisk.base_url, asterisk.ari_user, asterisk.ari_password, app="x") as c:
        await c.ping()


async def test_wrong_password_and_unreachable(asterisk: AsteriskServer) -> None:
    async with AriClient(asterisk.base_url, asterisk.ari_user, "wrong", app="x") as c:
        with pytest.raises(Exception) as info:
            await c.ping()
        assert getattr(info.value, "status", None) == 401
        assert "wrong" not in str(info.value)
    async with AriClient("http://127.0.0.1:1/ari", "u", "p4ss", app="x", timeout=2) as c:
        with pytest.raises(AriUnavailable) as unavailable:
            await c.ping()
        assert unavailable.value.status is None and "p4ss" not in str(unavailable.value)


async def test_channel_operations(test_caller: TestCaller) -> None:
    client = test_caller.client
    channel_id = await held_buyer(test_caller)
    await client.answer(channel_id)
    channel = await client.get_channel(channel_id)
    assert channel.id == channel_id and channel.state == "Up"
    assert channel_id in {c.id for c in await client.list_channels()}

    since = test_caller.mark()
    playback = await client.play(channel_id, ["sound:beep", "sound:beep"], playback_id="pb-1")
    assert playback.id == "pb-1" and playback.target_uri == f"channel:{channel_id}"
    finished = await test_caller.wait_event(PlaybackFinished, channel_id, timeout=5, since=since)
    assert finished.playback.id == "pb-1"

    await client.set_variable(channel_id, "KEYPRESS_TEST", "v1")
    assert await client.get_variable(channel_id, "KEYPRESS_TEST") == "v1"
    assert await client.get_variable(channel_id, "KEYPRESS_UNSET") is None

    # These return nothing (204) and leave no state visible over ARI: no error is the check.
    await client.mute(channel_id)
    await client.unmute(channel_id)
    await client.mute(channel_id, direction="in")
    await client.unmute(channel_id, direction="in")
    await client.hold(channel_id)
    await client.unhold(channel_id)
    await client.start_moh(channel_id)
    await client.stop_moh(channel_id)
    await client.start_moh(channel_id, "default")
    await client.stop_moh(channel_id)
    await client.ring(channel_id)
    await client.ring_stop(channel_id)
    assert (await client.get_channel(channel_id)).state == "Up"

    since = test_caller.mark()
    await client.hangup(channel_id)
    destroyed = await test_caller.wait_event(ChannelDestroyed, channel_id, timeout=5, since=since)
    assert destroyed.cause == 16


async def test_stop_playback(test_caller: TestCaller) -> None:
    channel_id = await held_buyer(test_caller)
    since = test_caller.mark()
    await test_caller.client.play(channel_id, "sound:tt-monkeys", playback_id="pb-long")
    await test_caller.client.stop_playback("pb-long")
    finished = await test_caller.wait_event(PlaybackFinished, channel_id, timeout=5, since=since)
    assert finished.playback.id == "pb-long"
    with pytest.raises(AriNotFound):  # (the finished one may linger a moment in Asterisk)
        await test_caller.client.stop_playback("pb-never-started")


async def test_missing_channel_is_not_found(test_caller: TestCaller) -> None:
    client = test_caller.client
    with pytest.raises(AriNotFound) as info:
        await client.get_channel("no-such-channel")
    assert info.value.status == 404 and info.value.method == "GET"
    assert info.value.path == "/channels/no-such-channel" and info.value.message
    with pytest.raises(AriNotFound):
        await client.hangup("no-such-channel")
    with pytest.raises(AriNotFound):  # a missing channel is not an "unset variable"
        await client.get_variable("no-such-channel", "FOO")
    with pytest.raises(AriNotFound):
        await client.get_bridge("no-such-bridge")


async def test_channel_outside_stasis_is_a_conflict(test_caller: TestCaller) -> None:
    channel_id = await held_buyer(test_caller)
    # The ;2 half runs the dialplan (Answer, Wait): it exists but is not in any Stasis app.
    with pytest.raises(AriConflict) as info:
        await test_caller.client.send_dtmf(f"{channel_id}-2", "1")
    assert info.value.status == 409


async def test_bad_request(test_caller: TestCaller) -> None:
    channel_id = await held_buyer(test_caller)
    with pytest.raises(AriBadRequest):
        await test_caller.client.originate("")  # no endpoint
    with pytest.raises(AriBadRequest):
        await test_caller.client.mute(channel_id, direction="sideways")


async def test_create_and_dial(test_caller: TestCaller) -> None:
    client = test_caller.client
    since = test_caller.mark()
    channel = await client.create_channel(
        "Local/answer@keypress-buyers", channel_id="created-1", variables={"KP_V": "1"}
    )
    assert isinstance(channel, Channel) and channel.state == "Down"
    await test_caller.wait_event(StasisStart, "created-1", timeout=5, since=since)
    assert await client.get_variable("created-1", "KP_V") == "1"
    await client.dial("created-1", timeout=5)
    dial = await test_caller.wait_event(
        Dial, "created-1", dialstatus="ANSWER", timeout=5, since=since
    )
    assert isinstance(dial, Dial)

    since = test_caller.mark()
    await client.create_channel("Local/busy@keypress-buyers", channel_id="created-busy")
    await test_caller.wait_event(StasisStart, "created-busy", timeout=5, since=since)
    await client.dial("created-busy", timeout=5)
    await test_caller.wait_event(Dial, "created-busy", dialstatus="BUSY", timeout=5, since=since)


async def test_continue_in_dialplan(test_caller: TestCaller) -> None:
    channel_id = await held_buyer(test_caller)
    since = test_caller.mark()
    await test_caller.client.continue_in_dialplan(channel_id, "keypress-buyers", "busy", 1)
    end = await test_caller.wait_event(StasisEnd, channel_id, timeout=5, since=since)
    assert end.type == "StasisEnd"


async def test_place_call_variables_and_caller_id_reach_the_daemon_side(
    test_caller: TestCaller, fake_daemon: TestCaller
) -> None:
    since = fake_daemon.mark()
    call = await call_into_daemon(
        test_caller,
        fake_daemon,
        "18005550100",
        caller_id='"Bob" <5551234>',
        variables={"KEYPRESS_TOKEN_CAMPAIGN": "spring"},
    )
    start = await fake_daemon.wait_event(StasisStart, call.remote_id, since=since)
    assert start.channel.caller.number == "5551234" and start.channel.caller.name == "Bob"
    assert start.channel.dialplan is not None
    assert start.channel.dialplan.exten == "18005550100"
    value = await fake_daemon.client.get_variable(call.remote_id, "KEYPRESS_TOKEN_CAMPAIGN")
    assert value == "spring"

    since = fake_daemon.mark()
    await call.press("7")
    dtmf = await fake_daemon.wait_event(ChannelDtmfReceived, call.remote_id, since=since)
    assert dtmf.digit == "7" and dtmf.duration_ms >= 80
    await call.hangup()
    await call.wait_hangup(5)


async def test_place_call_hung_up_before_answer(
    test_caller: TestCaller, fake_daemon: TestCaller
) -> None:
    since = fake_daemon.mark()
    placing = asyncio.create_task(test_caller.place_call("18005550100"))
    start = await fake_daemon.wait_event(StasisStart, since=since)
    await fake_daemon.client.hangup(start.channel.id, reason="unallocated")
    call = await asyncio.wait_for(placing, 5)
    assert not call.answered
    await call.wait_hangup(5)


async def test_bridge_dtmf_and_audio(test_caller: TestCaller, fake_daemon: TestCaller) -> None:
    a = await call_into_daemon(test_caller, fake_daemon, "1001")
    b = await call_into_daemon(test_caller, fake_daemon, "1002")
    client = fake_daemon.client
    bridge = await client.create_bridge(bridge_id="br-1", name="test")
    assert bridge.id == "br-1" and bridge.channels == []
    since = fake_daemon.mark()
    await client.add_channel("br-1", a.remote_id, absorb_dtmf=True)
    await client.add_channel("br-1", b.remote_id)
    await fake_daemon.wait_event(ChannelEnteredBridge, b.remote_id, since=since)
    assert set((await client.get_bridge("br-1")).channels) == {a.remote_id, b.remote_id}
    assert "br-1" in {br.id for br in await client.list_bridges()}

    # A presses 5: the daemon side sees it; absorbed, so B's phone hears nothing.
    since_t = test_caller.mark()
    await a.press("5")
    await fake_daemon.wait_event(ChannelDtmfReceived, a.remote_id, digit="5", since=since)
    # B presses 6: not absorbed, so it passes through the bridge to A's phone.
    await b.press("6")
    await fake_daemon.wait_event(ChannelDtmfReceived, b.remote_id, digit="6", since=since)
    await test_caller.wait_event(ChannelDtmfReceived, a.local_id, digit="6", since=since_t)
    assert not [
        e for e in test_caller.events[since_t:] if _is(ChannelDtmfReceived, b.local_id)(e)
    ], "the absorbed digit 5 reached B's phone"

    # Audio through the bridge: B's phone detects talking while A's phone plays monkeys.
    # TALK_DETECT(set)=500: 500 ms of silence ends a talk burst (default 2500).
    await test_caller.client.set_variable(b.local_id, "TALK_DETECT(set)", "500")
    since_t = test_caller.mark()
    await test_caller.client.play(a.local_id, "sound:tt-monkeys", playback_id="pb-monkeys")
    await test_caller.wait_event(ChannelTalkingStarted, b.local_id, timeout=5, since=since_t)
    await test_caller.client.stop_playback("pb-monkeys")
    # Talk detection needs audio frames to notice silence: send some.
    await test_caller.client.play(a.local_id, "sound:silence/3")
    finished = await test_caller.wait_event(
        ChannelTalkingFinished, b.local_id, timeout=8, since=since_t
    )
    # Asterisk reports talk time minus the silence threshold: negative for a short burst.
    assert isinstance(finished.duration, int)

    since = fake_daemon.mark()
    await client.remove_channel("br-1", b.remote_id)
    await fake_daemon.wait_event(ChannelLeftBridge, b.remote_id, since=since)
    # Through its channels alone the app would see the last member leave, not the bridge
    # go: subscribed to the bridge, it gets BridgeDestroyed. The bridge thread dissolves a
    # destroyed bridge later than the DELETE answers and the member leaves; BridgeDestroyed
    # comes from its destructor, after it is gone from the lookup GET reads.
    await client.subscribe(fake_daemon.app, "bridge:br-1")
    await client.destroy_bridge("br-1")
    await fake_daemon.wait_event(ChannelLeftBridge, a.remote_id, since=since)
    destroyed = await fake_daemon.wait_event(BridgeDestroyed, since=since)
    assert destroyed.bridge.id == "br-1"
    with pytest.raises(AriNotFound):
        await client.get_bridge("br-1")


async def test_parse_event_round_trips_every_event_seen(
    test_caller: TestCaller, fake_daemon: TestCaller
) -> None:
    """Re-parse every event both apps received in this test (a call, a press, a hangup)."""
    call = await call_into_daemon(test_caller, fake_daemon, "1003")
    await call.press("1")
    await fake_daemon.wait_event(ChannelDtmfReceived, call.remote_id)
    await fake_daemon.client.play(call.remote_id, "sound:beep")
    await fake_daemon.wait_event(PlaybackFinished, call.remote_id)
    await call.hangup()
    # The app holding ;2 gets StasisEnd but no ChannelDestroyed (it is unsubscribed once the
    # channel leaves Stasis); kp-test, the originating app, sees both halves destroyed.
    await fake_daemon.wait_event(StasisEnd, call.remote_id)
    await test_caller.wait_event(ChannelDestroyed, call.remote_id)
    seen = test_caller.events + fake_daemon.events
    for event in seen:
        if isinstance(event, UnknownEvent):
            again = parse_event(event.raw)
        else:
            again = parse_event(event.model_dump(mode="json", exclude_none=True))
        assert again == event
    kinds = {e.type for e in seen}
    assert {"StasisStart", "StasisEnd", "ChannelDtmfReceived", "ChannelHangupRequest",
            "ChannelDestroyed", "ChannelStateChange", "ChannelVarset", "PlaybackStarted",
            "PlaybackFinished", "Dial"} <= kinds  # fmt: skip


def test_parse_event_garbage() -> None:
    with pytest.raises(EventParseError) as info:
        parse_event({"no": "type"})
    assert info.value.type is None
    with pytest.raises(EventParseError):
        parse_event({"type": 42})
    with pytest.raises(EventParseError) as info:
        parse_event({"type": "StasisStart", "application": "a", "timestamp": "t"})
    assert info.value.type == "StasisStart" and "channel" in info.value.message
    with pytest.raises(EventParseError):
        parse_event(
            {
                "type": "ChannelDtmfReceived",
                "application": "a",
                "timestamp": "t",
                "channel": {"id": "c"},
                "digit": "1",
                "duration_ms": 100,
            }
        )
    unknown = parse_event({"type": "BridgeBlindTransfer", "application": "a"})
    assert isinstance(unknown, UnknownEvent) and unknown.raw["application"] == "a"
    assert channel_id_of(unknown) is None
    replaced = parse_event({"type": "ApplicationReplaced", "application": "a"})
    assert isinstance(replaced, ApplicationReplaced)  # no timestamp needed: it must not be lost


def test_a_key_press_validates_only_its_channels_identity() -> None:
    """ChannelDtmfReceived is on the key press path: its channel is validated as a
    ChannelRef (id, name, state); the rest of the channel is ignored, like unknown fields."""
    event = parse_event({
        "type": "ChannelDtmfReceived", "application": "a", "timestamp": "t", "digit": "5",
        "duration_ms": 90, "channel": {"id": "c-1", "name": "PJSIP/x-1", "state": "Up",
                                        "caller": "not an object", "dialplan": 7}})
    assert isinstance(event, ChannelDtmfReceived)
    assert (event.channel.id, event.digit, event.duration_ms) == ("c-1", "5", 90)
    assert channel_id_of(event) == "c-1"
    with pytest.raises(EventParseError) as info:
        parse_event({"type": "ChannelDtmfReceived", "application": "a", "timestamp": "t",
                     "digit": "5", "duration_ms": 90, "channel": {"id": "c-1", "name": "n"}})
    assert info.value.type == "ChannelDtmfReceived" and "channel.state" in info.value.message
