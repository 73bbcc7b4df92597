"""The ami mode's :class:`~keypress_ari.calls.channel_ops.ChannelOps`: AMI actions on
channels by name (MuteAudio, PlayDTMF, Hangup, Setvar, Getvar). Hold and play need the call
in the Stasis app (the ami mode hands the call over for them)."""

from __future__ import annotations

from keypress_ari.ami.client import AmiClient, AmiError
from keypress_ari.calls.channel_ops import ChannelGone, ChannelOpFailed


class NotInAmiMode(ChannelOpFailed):
    pass


class AmiChannelOps:
    """:class:`~keypress_ari.calls.channel_ops.ChannelOps` over AMI actions (channel names)."""

    __slots__ = ("_ami",)

    def __init__(self, ami: AmiClient) -> None:
        self._ami = ami

    async def _action(self, name: str, **fields: str) -> None:
        try:
            await self._ami.action(name, **fields)
        except AmiError as exc:
            if "No such channel" in str(exc):
                raise ChannelGone(str(exc)) from exc
            raise ChannelOpFailed(str(exc)) from exc

    async def mute_inbound(self, channel: str) -> None:
        await self._action("MuteAudio", Channel=channel, Direction="in", State="on")

    async def unmute_inbound(self, channel: str) -> None:
        await self._action("MuteAudio", Channel=channel, Direction="in", State="off")

    async def start_moh(self, channel: str) -> None:
        raise NotInAmiMode("hold is not built for the ami mode")

    async def stop_moh(self, channel: str) -> None:
        raise NotInAmiMode("unhold is not built for the ami mode")

    async def play(self, channel: str, media: str) -> None:
        raise NotInAmiMode("play is not built for the ami mode")

    async def send_dtmf(self, channel: str, digit: str) -> None:
        await self._action("PlayDTMF", Channel=channel, Digit=digit)

    async def hangup(self, channel: str) -> None:
        await self._action("Hangup", Channel=channel, Cause="16")

    async def set_variable(self, channel: str, name: str, value: str) -> None:
        await self._action("Setvar", Channel=channel, Variable=name, Value=value)

    async def variable(self, channel: str, name: str) -> str | None:
        try:
            reply = await self._ami.action("Getvar", Channel=channel, Variable=name)
        except AmiError:
            return None
        return reply.get("Value") or None
