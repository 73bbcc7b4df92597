"""Pydantic models for the ARI objects and events the daemon uses.

:func:`parse_event` turns one websocket JSON message into a typed event. It dispatches on
the ``type`` field through a dict (one lookup, one validation); types it does not model
come back as :class:`UnknownEvent`. All models ignore fields they do not declare, so newer
Asterisk versions that add fields keep working.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "Bridge",
    "BridgeDestroyed",
    "CallerId",
    "Channel",
    "ChannelDestroyed",
    "ChannelDtmfReceived",
    "ChannelEnteredBridge",
    "ChannelHangupRequest",
    "ChannelLeftBridge",
    "ChannelRef",
    "ChannelStateChange",
    "ChannelTalkingFinished",
    "ChannelTalkingStarted",
    "ChannelVarset",
    "Dial",
    "DialplanCEP",
    "Event",
    "EventParseError",
    "Playback",
    "PlaybackFinished",
    "PlaybackStarted",
    "StasisEnd",
    "StasisStart",
    "UnknownEvent",
    "channel_id_of",
    "parse_event",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=False)


# --- objects -------------------------------------------------------------------------


class CallerId(_Model):
    name: str = ""
    number: str = ""


class DialplanCEP(_Model):
    context: str
    exten: str
    priority: int
    app_name: str | None = None
    app_data: str | None = None


class ChannelRef(_Model):
    """A channel by its identity only: what a key press needs of it. Events that carry a
    whole channel but are handled on the key press path validate only this part (a full
    :class:`Channel` costs 2.5x as much to validate: three nested objects)."""

    id: str
    name: str
    state: str


class Channel(ChannelRef):
    caller: CallerId
    connected: CallerId | None = None
    dialplan: DialplanCEP | None = None
    creationtime: str | None = None
    language: str | None = None
    accountcode: str | None = None
    channelvars: dict[str, str] | None = None


class Bridge(_Model):
    id: str
    technology: str | None = None
    bridge_type: str | None = None
    bridge_class: str | None = None
    creator: str | None = None
    name: str | None = None
    channels: list[str] = []


class Playback(_Model):
    id: str
    media_uri: str
    target_uri: str
    state: str
    next_media_uri: str | None = None
    language: str | None = None


# --- events --------------------------------------------------------------------------


class _Event(_Model):
    type: str
    application: str
    timestamp: str


class StasisStart(_Event):
    channel: Channel
    args: list[str] = []
    replace_channel: Channel | None = None


class StasisEnd(_Event):
    channel: Channel


class ChannelDtmfReceived(_Event):
    channel: ChannelRef  # the key press path: only the channel's identity is validated
    digit: str
    duration_ms: int


class ChannelHangupRequest(_Event):
    channel: Channel
    cause: int | None = None
    soft: bool | None = None


class ChannelDestroyed(_Event):
    channel: Channel
    cause: int
    cause_txt: str


class ChannelStateChange(_Event):
    channel: Channel


class ChannelVarset(_Event):
    variable: str
    value: str
    channel: Channel | None = None


class PlaybackStarted(_Event):
    playback: Playback


class PlaybackFinished(_Event):
    playback: Playback


class Dial(_Event):
    peer: Channel
    caller: Channel | None = None
    forwarded: Channel | None = None
    forward: str | None = None
    dialstatus: str
    dialstring: str | None = None


class ChannelEnteredBridge(_Event):
    bridge: Bridge
    channel: Channel


class ChannelLeftBridge(_Event):
    bridge: Bridge
    channel: Channel


class BridgeDestroyed(_Event):
    bridge: Bridge


class ChannelTalkingStarted(_Event):
    channel: Channel


class ChannelTalkingFinished(_Event):
    channel: Channel
    duration: int


class CallBroadcast(_Event):
    """``StasisBroadcast()`` offers a channel to the apps its filter matches: the first
    ``POST /events/claim`` wins it (StasisStart follows), the others get 409."""

    channel: ChannelRef
    caller: str | None = None
    called: str | None = None


class ApplicationReplaced(_Event):
    """Another websocket registered this app name: this one gets no more events."""

    timestamp: str = ""


class UnknownEvent(_Model):
    """An event type this module does not model; ``raw`` is the whole message."""

    type: str
    raw: dict[str, Any]


Event = (
    StasisStart
    | StasisEnd
    | ChannelDtmfReceived
    | ChannelHangupRequest
    | ChannelDestroyed
    | ChannelStateChange
    | ChannelVarset
    | PlaybackStarted
    | PlaybackFinished
    | Dial
    | ChannelEnteredBridge
    | ChannelLeftBridge
    | BridgeDestroyed
    | ChannelTalkingStarted
    | ChannelTalkingFinished
    | CallBroadcast
    | ApplicationReplaced
    | UnknownEvent
)

_EVENT_TYPES: dict[str, type[_Event]] = {
    cls.__name__: cls
    for cls in (
        StasisStart,
        StasisEnd,
        ChannelDtmfReceived,
        ChannelHangupRequest,
        ChannelDestroyed,
        ChannelStateChange,
        ChannelVarset,
        PlaybackStarted,
        PlaybackFinished,
        Dial,
        ChannelEnteredBridge,
        ChannelLeftBridge,
        BridgeDestroyed,
        ChannelTalkingStarted,
        ChannelTalkingFinished,
        CallBroadcast,
        ApplicationReplaced,
    )
}


class EventParseError(ValueError):
    """A message is not a valid ARI event. ``type`` is its event type, if it had one."""

    def __init__(self, type: str | None, message: str) -> None:
        self.type = type
        self.message = message
        super().__init__(f"bad ARI event {type or '(no type)'}: {message}")


def parse_event(data: Mapping[str, Any]) -> Event:
    """Validate one decoded websocket message into a typed event.

    Raises :class:`EventParseError` when ``data`` has no string ``type`` or when an event
    of a known type does not validate. Unknown types become :class:`UnknownEvent`.
    """
    if not isinstance(data, Mapping):
        raise EventParseError(None, f"expected a JSON object, got {type(data).__name__}")
    event_type = data.get("type")
    if not isinstance(event_type, str):
        raise EventParseError(None, "missing or non-string 'type'")
    cls = _EVENT_TYPES.get(event_type)
    if cls is None:
        return UnknownEvent(type=event_type, raw=dict(data))
    try:
        # Every class in _EVENT_TYPES is a member of the Event union.
        return cls.model_validate(data)  # type: ignore[return-value]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise EventParseError(event_type, problems) from None


def channel_id_of(event: Event) -> str | None:
    """The id of the channel an event is about, for per-channel dispatch.

    ``Dial`` maps to its ``peer`` (the dialled channel); playback events to the channel
    in ``target_uri`` (``channel:ID``); bridge-only and unknown events to ``None``.
    """
    channel = getattr(event, "channel", None)
    if isinstance(channel, ChannelRef):
        return channel.id
    if isinstance(event, Dial):
        return event.peer.id
    if isinstance(event, PlaybackStarted | PlaybackFinished):
        target = event.playback.target_uri
        if target.startswith("channel:"):
            return target[len("channel:") :]
    return None
