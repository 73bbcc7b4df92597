"""The port through which a matched flow acts on a call's channels, whatever brought the call
to us (an ARI Stasis app today; FastAGI or AMI next). The flow runner and the call control
actions (``calls.controls``) speak only this; each call mode supplies an implementation
(``calls.ari_channel_ops`` for Stasis calls).

An implementation raises :class:`ChannelGone` when the channel no longer exists (a normal
race with a hangup) and :class:`ChannelOpFailed` for any other failure, with a message fit
for the call log.
"""

from __future__ import annotations

from typing import Protocol


class ChannelOpFailed(Exception):
    """The PBX refused or failed the operation."""


class ChannelGone(ChannelOpFailed):
    """The channel is gone (hung up meanwhile)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ChannelOps(Protocol):
    async def mute_inbound(self, channel: str) -> None:
        """Stop the audio the channel sends (the other party stops hearing it)."""

    async def unmute_inbound(self, channel: str) -> None: ...

    async def start_moh(self, channel: str) -> None:
        """Music on hold to the channel."""

    async def stop_moh(self, channel: str) -> None: ...

    async def play(self, channel: str, media: str) -> None:
        """Play ``media`` (a ``sound:`` URI) to the channel."""

    async def send_dtmf(self, channel: str, digit: str) -> None:
        """Send a digit to the channel (it hears the tone)."""
