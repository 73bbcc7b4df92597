"""Acting on a channel outside the Stasis app over ARI, by channel name: what an operator's
console button can do to a fastagi call between its key presses when no AMI is configured.

ARI answers only ``DELETE /channels/{id}`` (and variable reads) for a channel that is not in
its app; mute, hold, play and the rest get 409, so they are refused here with a message
that says what would make them work (an ``[ami]`` secret: the daemon then acts over AMI).
"""

from __future__ import annotations

from typing import Protocol

from keypress_ari.ari.client import AriClient
from keypress_ari.ari.errors import AriError
from keypress_ari.calls.channel_ops import ChannelGone, ChannelOpFailed, ChannelOps

NEEDS_AMI = ("ARI cannot {what} a channel outside its Stasis app: give the daemon an [ami] "
             "user and secret so it acts over AMI")


class OutsideOps(ChannelOps, Protocol):
    """Channel operations by name from outside the call's own session (AMI or ARI)."""

    async def hangup(self, channel: str) -> None: ...


class AriOutsideOps:
    """:class:`~keypress_ari.calls.channel_ops.ChannelOps` of which only hangup works."""

    __slots__ = ("_ari",)

    def __init__(self, ari: AriClient) -> None:
        self._ari = ari

    async def hangup(self, channel: str) -> None:
        try:
            for found in await self._ari.list_channels():
                if found.name == channel:
                    await self._ari.hangup(found.id)
                    return
        except AriError as exc:
            raise ChannelOpFailed(str(exc)) from exc
        raise ChannelGone(f"no channel {channel}")

    @staticmethod
    def _refuse(what: str) -> ChannelOpFailed:
        return ChannelOpFailed(NEEDS_AMI.format(what=what))

    async def mute_inbound(self, channel: str) -> None:
        raise self._refuse("mute")

    async def unmute_inbound(self, channel: str) -> None:
        raise self._refuse("unmute")

    async def start_moh(self, channel: str) -> None:
        raise self._refuse("hold")

    async def stop_moh(self, channel: str) -> None:
        raise self._refuse("unhold")

    async def play(self, channel: str, media: str) -> None:
        raise self._refuse("play to")

    async def send_dtmf(self, channel: str, digit: str) -> None:
        raise self._refuse("send a digit to")
