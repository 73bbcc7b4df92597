"""Bringing the daemon's calls in line with what Asterisk has: after the events websocket
reconnects, and when a restarted daemon adopts the calls still in its Stasis app.

Asterisk does not queue events while nobody is connected, so what happened meanwhile is read
back: ``GET /channels`` against the calls in memory. A call whose channel vanished is closed
with the reason; a call still up is told to resume (a timeout that came due meanwhile fires,
a prompt that ended meanwhile counts as finished, a buyer who answered meanwhile is
bridged). A channel in the app that no call knows (it entered while we were away) starts a
call as if its StasisStart had just arrived; an orphan buyer leg is hung up.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from keypress_ari.ari import events as ev
from keypress_ari.ari.client import AriClient
from keypress_ari.ari.errors import AriError
from keypress_ari.calls.state import CallState
from keypress_ari.store.port import CallStore

log = structlog.get_logger("keypress.resync")



@dataclass(frozen=True, slots=True)
class ChannelVanished:
    """A channel of a call is gone and its StasisEnd was never seen."""

    channel_id: str
    cause_txt: str


@dataclass(frozen=True, slots=True)
class Resumed:
    """The call is back in touch with Asterisk: re-check what may have happened meanwhile."""

    channel_id: str
    adopted: bool = False


@dataclass(frozen=True, slots=True)
class ResyncReport:
    channels: int
    vanished: int
    resumed: int
    started: int
    orphans_hung_up: int
    adopted: int = 0
    closed: int = 0
    bridges_destroyed: int = 0


def stasis_args(channel: ev.Channel) -> tuple[str, list[str]] | None:
    """(app, args) when the channel sits in a Stasis app, else None."""
    dp = channel.dialplan
    if dp is None or dp.app_name != "Stasis":
        return None
    app, *args = (dp.app_data or "").split(",")
    return app, args


async def resync(dispatcher: Any, ari: AriClient, app: str) -> ResyncReport:
    """Compare the dispatcher's calls with Asterisk's channels and queue what follows."""
    channels = {c.id: c for c in await ari.list_channels()}
    vanished = resumed = started = orphans = 0
    known: set[str] = set()
    for call in dispatcher.calls():
        ids = call.channel_ids()
        known.update(ids)
        for channel_id in ids:
            if channel_id not in channels:
                vanished += 1
                dispatcher.on_event(ChannelVanished(channel_id, "gone while disconnected"))
        dispatcher.on_event(Resumed(call.st.channel_id))
        resumed += 1
    now = datetime.now(UTC).isoformat()
    for channel in channels.values():
        where = stasis_args(channel)
        if channel.id in known or where is None or where[0] != app:
            continue
        if where[1][:1] == ["buyer"]:
            orphans += 1  # a leg of a call nobody holds any more
            with contextlib.suppress(AriError):
                await ari.hangup(channel.id)
            continue
        started += 1
        dispatcher.on_event(ev.StasisStart(type="StasisStart", application=app, timestamp=now,
                                           channel=channel, args=where[1]))
    bridges = await _destroy_orphan_bridges(dispatcher, ari, set(channels))
    report = ResyncReport(len(channels), vanished, resumed, started, orphans,
                          bridges_destroyed=bridges)
    log.info("resynced with Asterisk", channels=report.channels, vanished=vanished,
             resumed=resumed, started=started, orphans_hung_up=orphans,
             orphan_bridges_destroyed=bridges)
    return report


async def _destroy_orphan_bridges(dispatcher: Any, ari: AriClient, channels: set[str]) -> int:
    """Destroy the bridges of ours (``kp-`` ids) that no call holds and that hold no live
    channel (left empty by a run that stopped before its calls ended). A ``kp-`` bridge
    with live channels and no call of ours is another daemon's (several daemons on one
    Asterisk, or one that a peer is taking over): left alone."""
    calls = dispatcher.calls()
    # A call's bridge is always kp-<call id>, held even before its create request returns.
    held = {f"kp-{call.st.call_id}" for call in calls}
    destroyed = 0
    with contextlib.suppress(AriError):
        for bridge in await ari.list_bridges():
            if (not bridge.id.startswith("kp-") or bridge.id in held
                    or any(c in channels for c in bridge.channels)):
                continue
            with contextlib.suppress(AriError):
                await ari.destroy_bridge(bridge.id)
                destroyed += 1
    return destroyed


async def open_states(store: CallStore, mode: str, owner: str | None = None, *,
                      unowned: bool = True) -> list[CallState]:
    """The open calls of one call mode that ``owner`` carries (and, if ``unowned``, those
    nobody was named for: written before calls had owners), rebuilt from their snapshots;
    each continues after the highest ``seq`` written for it (rows may have followed the
    snapshot)."""
    states = []
    for row in await store.open_calls():
        state = CallState.from_snapshot(row.state)
        if state.owner != owner and not (state.owner is None and unowned):
            continue  # another daemon's (or another server's) call
        state.owner = owner
        if state.mode == mode and (mode == "stasis" or state.linkedid):
            state.seq = max(state.seq, row.last_seq)
            states.append(state)
    return states


async def adopt_open_calls(dispatcher: Any, store: CallStore, *, unowned: bool = True
                           ) -> int:
    """A restarted daemon takes back the calls the store says are open (their snapshots):
    those its owner name carries, and, if ``unowned``, those written before calls had owners
    (one daemon's first server takes them; a daemon's other servers never do).

    Calls whose channels are gone are closed by the resync that follows (ChannelVanished).
    """
    states = await open_states(store, "stasis", dispatcher.ctx.owner,
                               unowned=unowned)  # others: their own
    for state in states:
        dispatcher.adopt(state)
    return len(states)
