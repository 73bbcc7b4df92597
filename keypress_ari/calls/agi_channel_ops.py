""":class:`~keypress_ari.calls.channel_ops.ChannelOps` and the call driver over one FastAGI
session (the FastAGI call mode, ``calls.agi_mode``).

A FastAGI session runs on the channel that pressed, while it is out of the bridge; the
other leg can be read and hung up by name, nothing more. What the mode cannot do raises
:class:`NotInMode` (the catalog refuses such flows beforehand: ``flows.modes``), so a
flow that slipped through still leaves a clear ``failed`` row, never a silent no-op.
Channels are named by their Asterisk channel *names* in this mode.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from keypress_ari.agi.commands import AgiCommandFailed, AgiCommands
from keypress_ari.agi.server import AgiHangup, AgiTimeout
from keypress_ari.calls.channel_ops import ChannelGone, ChannelOpFailed

T = TypeVar("T")


class NotInMode(ChannelOpFailed):
    """The FastAGI mode cannot do this to that channel."""


async def _mapped(command: Awaitable[T]) -> T:
    """An AGI command, its failures as the channel port's: gone (the session ended or went
    silent) or failed (Asterisk's answer)."""
    try:
        return await command
    except (AgiHangup, AgiTimeout) as exc:
        raise ChannelGone(str(exc)) from exc
    except AgiCommandFailed as exc:
        raise ChannelOpFailed(str(exc)) from exc


class AgiChannelOps:
    __slots__ = ("_agi", "_own")

    def __init__(self, agi: AgiCommands, own_channel: str) -> None:
        self._agi, self._own = agi, own_channel

    def _only_own(self, channel: str, what: str) -> None:
        if channel != self._own:
            raise NotInMode(f"fastagi mode cannot {what} {channel}: it acts on the pressing "
                            f"channel ({self._own}) only")

    async def _run(self, app: str, data: str) -> None:
        await _mapped(self._agi.exec(app, data))

    async def mute_inbound(self, channel: str) -> None:
        self._only_own(channel, "mute")
        await self._run("Set", "MUTEAUDIO(in)=on")

    async def unmute_inbound(self, channel: str) -> None:
        self._only_own(channel, "unmute")
        await self._run("Set", "MUTEAUDIO(in)=off")

    async def start_moh(self, channel: str) -> None:
        raise NotInMode("fastagi mode cannot hold: music on hold to a bridged channel "
                        "needs the stasis mode")

    async def stop_moh(self, channel: str) -> None:
        raise NotInMode("fastagi mode cannot unhold: see hold")

    async def play(self, channel: str, media: str) -> None:
        self._only_own(channel, "play to")
        scheme, _, name = media.partition(":")
        if scheme != "sound" or not name:
            raise NotInMode(f"fastagi mode plays sound: media only, not {media}")
        await _mapped(self._agi.stream_file(name))

    async def send_dtmf(self, channel: str, digit: str) -> None:
        raise NotInMode("fastagi mode cannot pass a digit on: the features applicationmap "
                        "swallowed it")

    async def hangup(self, channel: str) -> bool:
        """Hang up ``channel`` (this one or the other leg); False when it was gone."""
        try:
            return await self._agi.hangup(None if channel == self._own else channel)
        except (AgiHangup, AgiTimeout):
            return False
        except AgiCommandFailed as exc:
            raise ChannelOpFailed(str(exc)) from exc

    async def set_variable(self, name: str, value: str) -> None:
        await _mapped(self._agi.set_variable(name, value))
