""":class:`~keypress_ari.calls.channel_ops.ChannelOps` over the ARI REST client (Stasis calls).
ARI's 404/409 ("channel not found", "not in Stasis") become ``ChannelGone``; other ARI errors
``ChannelOpFailed``."""

from __future__ import annotations

from collections.abc import Awaitable

from keypress_ari.ari.client import AriClient
from keypress_ari.ari.errors import AriConflict, AriError, AriNotFound
from keypress_ari.calls.channel_ops import ChannelGone, ChannelOpFailed


async def _run(request: Awaitable[object]) -> None:
    try:
        await request
    except (AriNotFound, AriConflict) as exc:
        raise ChannelGone(f"channel gone ({exc.status})", exc.status) from exc
    except AriError as exc:
        raise ChannelOpFailed(str(exc)) from exc


class AriChannelOps:
    __slots__ = ("_ari",)

    def __init__(self, ari: AriClient) -> None:
        self._ari = ari

    async def mute_inbound(self, channel: str) -> None:
        await _run(self._ari.mute(channel, direction="in"))

    async def unmute_inbound(self, channel: str) -> None:
        await _run(self._ari.unmute(channel, direction="in"))

    async def start_moh(self, channel: str) -> None:
        await _run(self._ari.start_moh(channel))

    async def stop_moh(self, channel: str) -> None:
        await _run(self._ari.stop_moh(channel))

    async def play(self, channel: str, media: str) -> None:
        await _run(self._ari.play(channel, media))

    async def send_dtmf(self, channel: str, digit: str) -> None:
        await _run(self._ari.send_dtmf(channel, digit))
