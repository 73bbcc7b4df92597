"""Test buyers: the far end of a buyer leg, held by the test's own Stasis app (``kp-test``).

The dialplan context ``keypress-test-buyers`` hands every call to ``Stasis(kp-test,buyer,NAME)``.
A buyer whose catalog endpoint is ``Local/acme@keypress-test-buyers/n`` is therefore a Local
pair: the dialler (the daemon, app ``keypress``) holds the ``;1`` half, its buyer leg, and the
``;2`` half enters ``kp-test`` with ``StasisStart.args == ["buyer", "acme"]``. The test then
plays the buyer's phone through :class:`BuyerPhone`: answer, ring, reject, press keys, hang up.
:class:`TestBuyers` rides on an existing :class:`~tests.support.caller.TestCaller` (same app,
same websocket).

Measured on Asterisk 22 (the dialler did ``POST /channels/create?endpoint=Local/acme@
keypress-test-buyers/n&app=keypress&originator=CALLER`` then ``POST /channels/{;1}/dial?
caller=CALLER[&timeout=N]``; latencies are from the test's POST to the dialler's event):

* ``/channels/create`` raises ``StasisStart`` for ``;1`` in the dialler's app at once (Down),
  but its HTTP answer can come *before* the channel is in Stasis: a ``/dial`` sent right after
  the answer got 409 "Channel not in Stasis application" in 5 of 20 attempts, and in 0 of 40
  once the dialler waited for that ``StasisStart``. Dial only after it (or retry the 409).
  ``/dial`` raises ``Dial`` with ``dialstatus=""`` on ``;1`` and, ~1 ms later, ``StasisStart``
  for ``;2`` in kp-test with args ``["buyer", NAME]``, channel state ``Ring``.
* :meth:`BuyerPhone.ring` (``POST /channels/{;2}/ring``): ``;1`` goes ``Ringing``
  (``ChannelStateChange``) and the dialler gets ``Dial`` ``RINGING`` (~1 ms).
* :meth:`BuyerPhone.answer` (ARI answer on ``;2``): ``ChannelStateChange`` Up on ``;2`` and
  ``;1`` and ``Dial`` ``ANSWER`` on ``;1`` (~1 ms). The buyer leg is then Up and can be bridged.
* Hanging up ``;2`` before answering (whatever the cause: ``busy``, ``congestion``,
  ``normal``) gives the dialler **no final Dial event**: only ``ChannelHangupRequest`` and
  ``ChannelDestroyed`` on ``;1`` carrying the cause (``busy`` -> 17 "User busy",
  ``congestion`` -> 34 "Circuit/channel congestion", ``normal`` -> 16 "Normal Clearing").
  That is :meth:`BuyerPhone.hangup` with a ``reason``.
* A ``Dial`` with ``dialstatus`` ``BUSY``/``CONGESTION`` needs a busy/congestion
  *indication*, which ARI cannot send; :meth:`BuyerPhone.reject` therefore continues ``;2``
  into the dialplan ``keypress-buyers,busy,1`` (``Busy(5)``) or ``congestion``
  (``Congestion(5)``): the dialler gets ``Dial`` ``BUSY`` / ``CONGESTION`` ~1 ms later (as a SIP
  buyer answering 486 / 503 would). **The dialler's ``;1`` leg is not hung up by that**: it
  stays (Down) until the dialler hangs it up, the dial timeout ends it (cause 19) or ``Busy(5)``
  ends after 5 s. The daemon must hang up the buyer leg itself on BUSY/CONGESTION.
* Dial timeout with the buyer left ringing (:meth:`BuyerPhone.ignore`, ``timeout=2``): **no
  ``Dial`` NOANSWER event** either; after the timeout ``;1`` gets ``ChannelHangupRequest``
  then ``ChannelDestroyed`` cause 19 "User alerting, no answer", and ``;2`` a
  ``ChannelHangupRequest`` cause 19 and ``StasisEnd`` in kp-test. The same holds for the
  dialplan buyers ``Local/noanswer@keypress-buyers/n`` (RINGING, then cause 19), while
  ``Local/busy@…`` and ``Local/congestion@…`` do give ``Dial`` BUSY / CONGESTION (and their
  ``;1`` also lingers until the dial timeout). So a dialler must read the final outcome from
  the leg's hangup cause as well as from ``Dial`` events.
* DTMF pressed by the buyer (:meth:`BuyerPhone.press`, ``POST /channels/{;2}/dtmf``) arrives as
  ``ChannelDtmfReceived`` on ``;1`` (the dialler's leg) ~duration + 100 ms after the POST. The
  buyer must have answered first.
* kp-test sees ``;2`` only while it is in Stasis: after :meth:`BuyerPhone.reject` (which moves it
  to the dialplan) or a hangup, its last event there is ``StasisEnd``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from keypress_ari.ari.errors import AriNotFound
from keypress_ari.ari.events import ChannelDestroyed, Event, StasisEnd, StasisStart
from tests.support.caller import TestCaller

__all__ = ["BUYERS_CONTEXT", "REJECT_EXTENSIONS", "BuyerPhone", "TestBuyers", "buyer_endpoint"]

BUYERS_CONTEXT = "keypress-test-buyers"
# Dialplan targets that signal a refusal to the dialler (see module docstring).
REJECT_CONTEXT = "keypress-buyers"
REJECT_EXTENSIONS = {"busy": "busy", "congestion": "congestion"}


def buyer_endpoint(name: str) -> str:
    """The dial string of the test buyer ``name`` (lower-case letters and digits, >= 2 chars)."""
    return f"Local/{name}@{BUYERS_CONTEXT}/n"



def agent_route(number: str, group: str = "agent") -> str:
    """Catalog YAML for the usual test route: ``number`` to router ``live`` (no key press),
    which dials buyer ``acme`` (the test buyers' Local endpoint), an external agent whose
    presses run flow group ``group``. Append it to a ``flow_groups:`` block."""
    return (
        "routers:\n"
        "  - {name: live, request_key_press: false, buyers: [acme]}\n"
        "buyers:\n"
        '  - {name: acme, endpoint: "Local/acme@keypress-test-buyers/n",\n'
        f"     forwards_to_external_agent: true, flow_group: {group}}}\n"
        "numbers:\n"
        f'  - {{number: "{number}", router: live}}\n'
    )

@dataclass
class BuyerPhone:
    """The buyer's far end (the ``;2`` half of the buyer Local pair) in kp-test."""

    caller: TestCaller = field(repr=False)
    channel_id: str
    name: str

    async def ring(self) -> None:
        """Indicate ringing: the dialler gets ``Dial`` RINGING."""
        await self.caller.client.ring(self.channel_id)

    async def answer(self) -> None:
        """Answer: the dialler gets ``Dial`` ANSWER and its leg goes Up."""
        await self.caller.client.answer(self.channel_id)

    async def reject(self, reason: str = "busy") -> None:
        """Refuse the call with a busy (``"busy"``) or congestion (``"congestion"``) signal:
        the dialler gets ``Dial`` BUSY / CONGESTION. ``;2`` leaves kp-test for the dialplan."""
        try:
            extension = REJECT_EXTENSIONS[reason]
        except KeyError:
            raise ValueError(
                f"reject reason must be one of {sorted(REJECT_EXTENSIONS)}, not {reason!r}"
            ) from None
        await self.caller.client.continue_in_dialplan(self.channel_id, REJECT_CONTEXT, extension, 1)

    async def ignore(self, *, ring: bool = True) -> None:
        """Leave the call unanswered (for no-answer); by default it rings like a real phone."""
        if ring:
            await self.ring()

    async def press(self, digits: str, duration_ms: int = 100, between_ms: int = 100) -> None:
        """DTMF from the buyer: ``ChannelDtmfReceived`` on the dialler's buyer leg (;1)."""
        await self.caller.client.send_dtmf(
            self.channel_id, digits, duration_ms=duration_ms, between_ms=between_ms
        )

    async def play(self, media: str) -> str:
        """Play media from the buyer's phone (what the buyer says); returns the playback id."""
        playback = await self.caller.client.play(self.channel_id, media)
        return playback.id

    async def hangup(self, reason: str = "normal") -> None:
        """Hang up with an ARI hangup reason (``normal``, ``busy``, ``congestion``, ...).
        Before answer, the dialler sees only the cause on its leg (no final ``Dial``)."""
        with contextlib.suppress(AriNotFound):
            await self.caller.client.hangup(self.channel_id, reason=reason)

    async def wait_hangup(self, timeout: float = 10.0) -> Event:
        """Wait until the buyer's phone left kp-test (``StasisEnd``) or was destroyed."""
        channel_id = self.channel_id

        def ended(event: Event) -> bool:
            return (
                isinstance(event, StasisEnd | ChannelDestroyed) and event.channel.id == channel_id
            )

        return await self.caller.wait_for(ended, timeout=timeout)


class TestBuyers:
    """Buyer phones rung through ``keypress-test-buyers``, on an existing :class:`TestCaller`."""

    __test__ = False  # not a pytest test class

    def __init__(self, caller: TestCaller) -> None:
        self.caller = caller
        self._claimed: set[str] = set()

    @classmethod
    def of(cls, caller: TestCaller) -> TestBuyers:
        """The one TestBuyers of ``caller`` (legs it returned are never returned again)."""
        buyers: TestBuyers | None = getattr(caller, "_kp_buyers", None)
        if buyers is None:
            buyers = cls(caller)
            caller._kp_buyers = buyers  # type: ignore[attr-defined]
        return buyers

    async def next_leg(self, name: str, timeout: float = 10.0) -> BuyerPhone:
        """The next buyer ``name`` being rung that no earlier call returned (waits if needed;
        a leg that arrived before this call counts)."""
        claimed = self._claimed

        def rung(event: Event) -> bool:
            return (
                isinstance(event, StasisStart)
                and event.args == ["buyer", name]
                and event.channel.id not in claimed
            )

        event = await self.caller.wait_for(rung, timeout=timeout)
        assert isinstance(event, StasisStart)
        claimed.add(event.channel.id)
        return BuyerPhone(caller=self.caller, channel_id=event.channel.id, name=name)
