"""The buyer and audio test harness, proven on the real Asterisk without the daemon.

A second :class:`TestCaller` registered as app ``keypress`` plays the daemon's part: it gets
the ``;2`` half of the caller's Local pair from ``keypress-inbound``, creates and dials the
buyer leg ``Local/acme@keypress-test-buyers/n`` and bridges both legs as the daemon does
(``mixing,dtmf_events``, ``absorbDTMF``). The test's own app ``kp-test`` holds the caller's
phone (``;1``) and the buyer's phone (``;2``, via :class:`TestBuyers`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from keypress_ari.ari.errors import AriNotFound
from keypress_ari.ari.events import (
    ChannelDestroyed,
    ChannelDtmfReceived,
    Dial,
    Event,
    StasisStart,
)
from tests.support.asterisk import AsteriskServer
from tests.support.audio import falls_quiet, hears, hears_music, no_event_within, stays_quiet
from tests.support.buyers import BuyerPhone, TestBuyers, buyer_endpoint
from tests.support.caller import PlacedCall, TestCaller

pytestmark = pytest.mark.asterisk

BUYER = "acme"
TRACKING_NUMBER = "18005550100"


@dataclass
class Legs:
    """One call as the daemon would hold it, and the test's phones at both ends."""

    call: PlacedCall  # call.local_id: the caller's phone (kp-test); remote_id: caller leg
    buyer_leg: str  # the daemon's buyer leg (;1 of the buyer pair, app keypress)
    buyer: BuyerPhone  # the buyer's phone (;2, kp-test)
    bridge_id: str | None = None

    @property
    def caller_phone(self) -> str:
        return self.call.local_id

    @property
    def caller_leg(self) -> str:
        return self.call.remote_id


class StandInDaemon(TestCaller):
    """Plays the daemon's part: a TestCaller registered as Stasis app ``keypress``."""

    __test__ = False

    def __init__(self, asterisk: AsteriskServer) -> None:
        super().__init__(
            asterisk.base_url, asterisk.ari_user, asterisk.ari_password, app="keypress"
        )
        self.bridge_ids: list[str] = []


@pytest.fixture
async def kp_app(asterisk: AsteriskServer, test_caller: TestCaller) -> AsyncIterator[StandInDaemon]:
    """The stand-in daemon; bridges it made are destroyed afterwards (channels are hung up
    by the ``ari_cleanup`` fixture)."""
    app = StandInDaemon(asterisk)
    await app.start()
    try:
        yield app
    finally:
        for bridge_id in app.bridge_ids:
            with contextlib.suppress(AriNotFound):
                await app.client.destroy_bridge(bridge_id)
        await app.close()


@pytest.fixture
def buyers(test_caller: TestCaller) -> TestBuyers:
    return TestBuyers(test_caller)


async def call_in(test_caller: TestCaller, kp_app: StandInDaemon) -> PlacedCall:
    """Place a call through ``keypress-inbound``; the stand-in daemon answers its ;2 half."""
    since = kp_app.mark()
    task = asyncio.ensure_future(test_caller.place_call(TRACKING_NUMBER))
    try:
        start = await kp_app.wait_event(StasisStart, since=since, timeout=5.0)
        await kp_app.client.answer(start.channel.id)
        call = await task
    finally:
        if not task.done():
            task.cancel()
    assert call.answered and call.remote_id == start.channel.id
    return call


async def dial_buyer(
    test_caller: TestCaller,
    kp_app: StandInDaemon,
    buyers: TestBuyers,
    *,
    timeout: int | None = None,
) -> Legs:
    """Place a call and dial the buyer the way the daemon does; the buyer is being rung."""
    call = await call_in(test_caller, kp_app)
    since = kp_app.mark()
    leg = await kp_app.client.create_channel(
        buyer_endpoint(BUYER), app="keypress", originator=call.remote_id
    )
    # /channels/create can answer before the channel is in Stasis: a /dial sent before its
    # StasisStart got 409 "Channel not in Stasis application" in ~1 of 4 attempts.
    await kp_app.wait_event(StasisStart, leg.id, since=since, timeout=5.0)
    await kp_app.client.dial(leg.id, caller=call.remote_id, timeout=timeout)
    phone = await buyers.next_leg(BUYER, timeout=5.0)
    return Legs(call=call, buyer_leg=leg.id, buyer=phone)


async def connect(
    test_caller: TestCaller,
    kp_app: StandInDaemon,
    buyers: TestBuyers,
    *,
    absorb_dtmf: bool = True,
) -> Legs:
    """Dial the buyer, answer as the buyer and bridge both legs as the daemon does."""
    legs = await dial_buyer(test_caller, kp_app, buyers)
    await legs.buyer.answer()
    await kp_app.wait_event(Dial, legs.buyer_leg, dialstatus="ANSWER", timeout=5.0)
    bridge = await kp_app.client.create_bridge(bridge_type="mixing,dtmf_events")
    kp_app.bridge_ids.append(bridge.id)
    legs.bridge_id = bridge.id
    await kp_app.client.add_channel(bridge.id, legs.caller_leg, absorb_dtmf=absorb_dtmf)
    await kp_app.client.add_channel(bridge.id, legs.buyer_leg, absorb_dtmf=absorb_dtmf)
    return legs


def dial_statuses(app: TestCaller, leg: str) -> list[str]:
    return [e.dialstatus for e in app.events_by_channel.get(leg, []) if isinstance(e, Dial)]


# --- ringing, answer, refusal ------------------------------------------------------------


async def test_ringing_then_answer_reach_the_dialler(
    test_caller: TestCaller, kp_app: StandInDaemon, buyers: TestBuyers
) -> None:
    legs = await dial_buyer(test_caller, kp_app, buyers)
    await legs.buyer.ring()
    await kp_app.wait_event(Dial, legs.buyer_leg, dialstatus="RINGING", timeout=5.0)
    await legs.buyer.answer()
    await kp_app.wait_event(Dial, legs.buyer_leg, dialstatus="ANSWER", timeout=5.0)
    assert dial_statuses(kp_app, legs.buyer_leg) == ["", "RINGING", "ANSWER"]
    assert (await kp_app.client.get_channel(legs.buyer_leg)).state == "Up"


@pytest.mark.parametrize(("reason", "status"), [("busy", "BUSY"), ("congestion", "CONGESTION")])
async def test_reject_gives_the_dialler_a_dial_status(
    test_caller: TestCaller, kp_app: StandInDaemon, buyers: TestBuyers, reason: str, status: str
) -> None:
    legs = await dial_buyer(test_caller, kp_app, buyers)
    await legs.buyer.reject(reason)
    await kp_app.wait_event(Dial, legs.buyer_leg, dialstatus=status, timeout=5.0)
    # Asterisk leaves the dialler's leg up after BUSY/CONGESTION: the dialler hangs it up.
    since = kp_app.mark()
    await kp_app.client.hangup(legs.buyer_leg)
    await kp_app.wait_event(ChannelDestroyed, legs.buyer_leg, since=since, timeout=5.0)


@pytest.mark.parametrize(("reason", "cause"), [("busy", 17), ("congestion", 34), ("normal", 16)])
async def test_hangup_before_answer_gives_only_a_cause(
    test_caller: TestCaller, kp_app: StandInDaemon, buyers: TestBuyers, reason: str, cause: int
) -> None:
    legs = await dial_buyer(test_caller, kp_app, buyers)
    await legs.buyer.hangup(reason)
    destroyed = await kp_app.wait_event(ChannelDestroyed, legs.buyer_leg, timeout=5.0)
    assert destroyed.cause == cause
    # No final Dial event came before the leg was destroyed (bounded by that event).
    assert dial_statuses(kp_app, legs.buyer_leg) == [""]


async def test_no_answer_ends_with_cause_19(
    test_caller: TestCaller, kp_app: StandInDaemon, buyers: TestBuyers
) -> None:
    legs = await dial_buyer(test_caller, kp_app, buyers, timeout=2)
    await legs.buyer.ignore()
    await kp_app.wait_event(Dial, legs.buyer_leg, dialstatus="RINGING", timeout=5.0)
    destroyed = await kp_app.wait_event(ChannelDestroyed, legs.buyer_leg, timeout=6.0)
    assert destroyed.cause == 19  # "User alerting, no answer"
    assert dial_statuses(kp_app, legs.buyer_leg) == ["", "RINGING"]  # no NOANSWER event
    await legs.buyer.wait_hangup(timeout=5.0)


# --- audio -------------------------------------------------------------------------------


async def test_buyer_hears_caller_unless_muted(
    test_caller: TestCaller, kp_app: StandInDaemon, buyers: TestBuyers
) -> None:
    legs = await connect(test_caller, kp_app, buyers)
    buyer_phone = legs.buyer.channel_id

    assert await hears(test_caller, buyer_phone, legs.caller_phone)
    assert await hears(test_caller, legs.caller_phone, buyer_phone)

    await kp_app.client.mute(legs.caller_leg, direction="in")
    assert not await hears(test_caller, buyer_phone, legs.caller_phone)
    assert await hears(test_caller, legs.caller_phone, buyer_phone)  # only one way muted

    await kp_app.client.unmute(legs.caller_leg, direction="in")
    assert await hears(test_caller, buyer_phone, legs.caller_phone)


async def test_music_on_hold_is_heard_by_the_caller_only(
    test_caller: TestCaller, kp_app: StandInDaemon, buyers: TestBuyers
) -> None:
    legs = await connect(test_caller, kp_app, buyers)

    await kp_app.client.start_moh(legs.caller_leg)
    assert await hears_music(test_caller, legs.caller_phone)
    assert await stays_quiet(test_caller, legs.buyer.channel_id)
    assert not await falls_quiet(test_caller, legs.caller_phone)  # music that goes on fails

    await kp_app.client.stop_moh(legs.caller_leg)
    assert await falls_quiet(test_caller, legs.caller_phone)
    assert await hears(test_caller, legs.caller_phone, legs.buyer.channel_id)


# --- DTMF --------------------------------------------------------------------------------


@pytest.mark.parametrize("absorb", [True, False], ids=["absorbed", "passed-on"])
async def test_buyer_dtmf_reaches_the_buyer_leg(
    test_caller: TestCaller, kp_app: StandInDaemon, buyers: TestBuyers, absorb: bool
) -> None:
    legs = await connect(test_caller, kp_app, buyers, absorb_dtmf=absorb)
    caller_phone = legs.caller_phone
    since = test_caller.mark()
    kp_since = kp_app.mark()

    await legs.buyer.press("5")
    received = await kp_app.wait_event(
        ChannelDtmfReceived, legs.buyer_leg, since=kp_since, timeout=5.0
    )
    assert received.digit == "5"

    def at_caller(event: Event) -> bool:
        return isinstance(event, ChannelDtmfReceived) and event.channel.id == caller_phone

    if absorb:
        assert await no_event_within(test_caller, at_caller, since=since)
    else:
        await test_caller.wait_for(at_caller, since=since, timeout=5.0)
