"""Call control actions: each a small operation over the channel port and the call's legs.

The consumer is the caller; "the buyer" is the buyer leg currently dialled or bridged.
Muting uses direction ``in`` (audio *from* the consumer into Asterisk), so the buyer stops
hearing the consumer while the consumer still hears the buyer. Holding the consumer mutes
them the same way and plays music on hold to them; unholding undoes both, leaving a mute
that ``mute_consumer`` set in place. ``block_caller`` and ``hangup`` change the call itself
and are carried out by the flow runner (``calls.flow_runner``). Nothing here knows how the
call reached us: the operations go through :class:`~keypress_ari.calls.channel_ops.ChannelOps`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from keypress_ari.calls.channel_ops import ChannelOps
from keypress_ari.calls.state import CallState
from keypress_ari.flows.model import CallControlAction


class NoSuchLeg(Exception):
    """The action targets a leg the call does not have (e.g. no buyer yet)."""


def _buyer(st: CallState) -> str:
    if st.buyer_channel is None:
        raise NoSuchLeg("the call has no buyer leg")
    return st.buyer_channel


async def mute_consumer(ops: ChannelOps, st: CallState, _: CallControlAction) -> str:
    await ops.mute_inbound(st.channel_id)
    st.consumer_muted = True
    return "consumer muted"


async def unmute_consumer(ops: ChannelOps, st: CallState, _: CallControlAction) -> str:
    if not st.consumer_held:
        await ops.unmute_inbound(st.channel_id)
    st.consumer_muted = False
    return "consumer unmuted" if not st.consumer_held else "mute lifted; consumer still held"


async def hold_consumer(ops: ChannelOps, st: CallState, _: CallControlAction) -> str:
    await ops.mute_inbound(st.channel_id)
    await ops.start_moh(st.channel_id)
    st.consumer_held = True
    return "consumer on hold"


async def unhold_consumer(ops: ChannelOps, st: CallState, _: CallControlAction) -> str:
    await ops.stop_moh(st.channel_id)
    if not st.consumer_muted:
        await ops.unmute_inbound(st.channel_id)
    st.consumer_held = False
    return "consumer off hold" + (" (still muted)" if st.consumer_muted else "")


async def play(ops: ChannelOps, st: CallState, action: CallControlAction) -> str:
    assert action.media is not None  # the model requires it for play
    targets = {
        "consumer": [st.channel_id],
        "buyer": [_buyer(st)],
        "both": [st.channel_id, *([st.buyer_channel] if st.buyer_channel else [])],
    }[action.to]
    for channel in targets:
        await ops.play(channel, action.media)
    return f"playing {action.media} to {action.to}"


Control = Callable[[ChannelOps, CallState, CallControlAction], Awaitable[str]]

CONTROLS: dict[str, Control] = {
    "mute_consumer": mute_consumer,
    "unmute_consumer": unmute_consumer,
    "hold_consumer": hold_consumer,
    "unhold_consumer": unhold_consumer,
    "play": play,
}
