"""Following calls from AMI events (pure: fed messages, returns what they mean).

Calls are grouped by ``Linkedid``. ``DialBegin`` names the two legs that matter: its
channel is the caller (the one running ``Dial()``, its ``Exten`` the dialled number), its
``DestChannel`` the buyer. ``DialEnd`` with ``DialStatus: ANSWER`` is when the buyer
answered. ``BridgeEnter`` says which bridge (and technology) a leg is in; a
``native_rtp`` bridge delivers no DTMF events at all, which is reported once per bridge.
``DTMFEnd`` with ``Direction: Received`` on the caller or the buyer is a key press.
A call is forgotten when its last channel hangs up (memory is bounded by the live calls).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from keypress_ari.ami.protocol import AmiMessage

Leg = Literal["caller", "buyer"]


@dataclass(frozen=True, slots=True)
class DigitPressed:
    linkedid: str
    uniqueid: str
    channel: str
    digit: str
    duration_ms: int
    leg: Leg
    caller_channel: str
    buyer_channel: str
    caller_uniqueid: str
    buyer_uniqueid: str
    number: str
    caller_number: str
    caller_name: str
    answered_at: float | None  # the buyer answered (AMI Timestamp), if seen


@dataclass(frozen=True, slots=True)
class NativeBridge:
    """A bridge of native RTP: its legs' keys will never reach us."""

    bridge_id: str
    channel: str

    @property
    def warning(self) -> str:
        return (f"bridge {self.bridge_id} ({self.channel}) uses native_rtp: no DTMF events "
                "will arrive from it; set any DYNAMIC_FEATURES value before Dial() or "
                "noload => bridge_native_rtp.so")


@dataclass(frozen=True, slots=True)
class CallGone:
    linkedid: str


Seen = DigitPressed | NativeBridge | CallGone


@dataclass(slots=True)
class _Call:
    channels: dict[str, str] = field(default_factory=dict)  # uniqueid -> channel name
    caller: str | None = None  # uniqueid
    buyer: str | None = None
    number: str = ""
    caller_number: str = ""
    caller_name: str = ""
    answered_at: float | None = None


def _stamp(message: AmiMessage) -> float | None:
    try:
        return float(message["Timestamp"])
    except (KeyError, ValueError):
        return None


class CallTracker:
    def __init__(self) -> None:
        self._calls: dict[str, _Call] = {}
        self._linked: dict[str, str] = {}  # uniqueid -> linkedid
        self._native_seen: set[str] = set()
        self._roles: dict[str, tuple[str, str]] = {}  # linkedid -> (caller, buyer) names
        self._listed: set[str] | None = None  # uniqueids seen alive since begin_listing()

    def expect(self, linkedid: str, caller_channel: str, buyer_channel: str, number: str,
               answered_at: float | None) -> None:
        """A call known from before (a restarted daemon's snapshot): its legs are found by
        name among the ``CoreShowChannel`` events that follow."""
        call = self._calls.setdefault(linkedid, _Call())
        call.number, call.answered_at = number, answered_at
        self._roles[linkedid] = (caller_channel, buyer_channel)

    def _show_channel(self, m: AmiMessage) -> None:
        call = self._call(m)
        if call is None:
            return
        uid, name = m["Uniqueid"], m.get("Channel", "")
        call.channels[uid] = name
        roles = self._roles.get(self._linked[uid])
        if roles is not None:
            if name == roles[0]:
                call.caller = uid
            elif name == roles[1]:
                call.buyer = uid

    def begin_listing(self) -> None:
        """A fresh AMI login lists the live channels (``CoreShowChannels``): what it does not
        list (nor any event shows alive meanwhile) hung up while AMI was away."""
        self._listed = set()

    def end_listing(self) -> None:
        """The list is complete: forget the channels it did not show, and the calls left
        with none (unless a restarted daemon still expects them: :meth:`expect`)."""
        listed, self._listed = self._listed, None
        if listed is None:
            return
        for linkedid, call in list(self._calls.items()):
            for uid in [u for u in call.channels if u not in listed]:
                del call.channels[uid]
                self._linked.pop(uid, None)
            if not call.channels and linkedid not in self._roles:
                del self._calls[linkedid]

    def legs(self, linkedid: str) -> tuple[str | None, str | None]:
        """The uniqueids of a call's caller and buyer legs, where known."""
        call = self._calls.get(linkedid)
        return (call.caller, call.buyer) if call is not None else (None, None)

    def has_channels(self, linkedid: str) -> bool:
        call = self._calls.get(linkedid)
        return call is not None and bool(call.channels)

    def forget(self, linkedid: str) -> None:
        call = self._calls.pop(linkedid, None)
        self._roles.pop(linkedid, None)
        for uid in call.channels if call is not None else ():
            self._linked.pop(uid, None)

    @property
    def calls(self) -> int:
        return len(self._calls)

    def feed(self, m: AmiMessage) -> Seen | None:
        kind = m.get("Event", "")
        handler = _HANDLERS.get(kind)
        return handler(self, m) if handler is not None else None

    def _call(self, m: AmiMessage, uid_key: str = "Uniqueid",
              linked_key: str = "Linkedid") -> _Call | None:
        uid = m.get(uid_key, "")
        linkedid = m.get(linked_key) or self._linked.get(uid, "")
        if not uid or not linkedid:
            return None
        call = self._calls.setdefault(linkedid, _Call())
        self._linked[uid] = linkedid
        call.channels.setdefault(uid, "")  # every linked channel: its hangup is awaited
        if self._listed is not None:
            self._listed.add(uid)
        return call

    def _new_channel(self, m: AmiMessage) -> None:
        call = self._call(m)
        if call is not None:
            call.channels[m["Uniqueid"]] = m.get("Channel", "")

    def _dial_begin(self, m: AmiMessage) -> None:
        call = self._call(m)
        if call is None or not m.get("DestUniqueid"):
            return
        self._linked[m["DestUniqueid"]] = self._linked[m["Uniqueid"]]
        call.channels[m["Uniqueid"]] = m.get("Channel", "")
        call.channels[m["DestUniqueid"]] = m.get("DestChannel", "")
        call.caller, call.buyer = m["Uniqueid"], m["DestUniqueid"]
        call.number = m.get("Exten", "")
        call.caller_number = m.get("CallerIDNum", "")
        call.caller_name = m.get("CallerIDName", "")
        if call.caller_number in ("<unknown>",):
            call.caller_number = ""
        if call.caller_name in ("<unknown>",):
            call.caller_name = ""

    def _dial_end(self, m: AmiMessage) -> None:
        call = self._call(m, "DestUniqueid")
        if call is not None and m.get("DialStatus") == "ANSWER" and call.buyer == m.get(
                "DestUniqueid"):
            call.answered_at = _stamp(m)

    def _bridge_enter(self, m: AmiMessage) -> NativeBridge | None:
        bridge = m.get("BridgeUniqueid", "")
        if m.get("BridgeTechnology") == "native_rtp" and bridge not in self._native_seen:
            self._native_seen.add(bridge)
            return NativeBridge(bridge, m.get("Channel", ""))
        return None

    def _bridge_destroy(self, m: AmiMessage) -> None:
        self._native_seen.discard(m.get("BridgeUniqueid", ""))

    def _dtmf_end(self, m: AmiMessage) -> DigitPressed | None:
        if m.get("Direction") != "Received":
            return None
        uid = m.get("Uniqueid", "")
        call = self._calls.get(m.get("Linkedid") or self._linked.get(uid, ""))
        if call is None or uid not in (call.caller, call.buyer) or call.buyer is None:
            return None
        assert call.caller is not None
        try:
            duration = int(m.get("DurationMs", "0"))
        except ValueError:
            duration = 0
        return DigitPressed(
            linkedid=self._linked[uid], uniqueid=uid, channel=m.get("Channel", ""),
            digit=m.get("Digit", ""), duration_ms=duration,
            leg="caller" if uid == call.caller else "buyer",
            caller_channel=call.channels.get(call.caller, ""),
            buyer_channel=call.channels.get(call.buyer, ""), caller_uniqueid=call.caller,
            buyer_uniqueid=call.buyer, number=call.number,
            caller_number=call.caller_number, caller_name=call.caller_name,
            answered_at=call.answered_at)

    def _hangup(self, m: AmiMessage) -> CallGone | None:
        uid = m.get("Uniqueid", "")
        linkedid = self._linked.pop(uid, None) or m.get("Linkedid", "")
        call = self._calls.get(linkedid)
        if call is None:
            return None
        call.channels.pop(uid, None)
        if call.channels:
            return None
        del self._calls[linkedid]
        self._roles.pop(linkedid, None)
        return CallGone(linkedid)


_HANDLERS: dict[str, Callable[[CallTracker, AmiMessage], Seen | None]] = {
    "Newchannel": CallTracker._new_channel,
    "CoreShowChannel": CallTracker._show_channel,
    "DialBegin": CallTracker._dial_begin,
    "DialEnd": CallTracker._dial_end,
    "BridgeEnter": CallTracker._bridge_enter,
    "BridgeDestroy": CallTracker._bridge_destroy,
    "DTMFEnd": CallTracker._dtmf_end,
    "Hangup": CallTracker._hangup,
}

# The events the tracker follows (an AMI session filter asks Asterisk for these only;
# CoreShowChannel comes as the answer to an action and is never filtered).
FOLLOWED_EVENTS = tuple(name for name in _HANDLERS if name != "CoreShowChannel")
