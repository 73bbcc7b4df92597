"""Carrying on the calls of a daemon that died: their persisted states (``calls.state``,
now naming this daemon as owner) are adopted as a restarted daemon would, and their channels
are moved from the dead daemon's Stasis app into this one's (``POST /channels/{id}/move``).
The channels stay in their bridge through the move; the call's log continues after its
highest ``seq``; a leg that is gone is closed by the resync that follows."""

from __future__ import annotations

import structlog

from keypress_ari.ari.client import AriClient
from keypress_ari.ari.errors import AriError, AriNotFound
from keypress_ari.calls.dispatcher import Dispatcher
from keypress_ari.calls.resync import open_states, resync
from keypress_ari.store.port import CallStore

log = structlog.get_logger("keypress.takeover")


async def carry_on(dispatcher: Dispatcher, ari: AriClient, store: CallStore, app: str,
                   call_ids: tuple[str, ...]) -> int:
    """Adopt the calls ``call_ids`` (just made this daemon's) and move their legs here."""
    wanted = set(call_ids)
    states = [st for st in await open_states(store, "stasis", dispatcher.ctx.owner)
              if st.call_id in wanted]
    for st in states:
        dispatcher.adopt(st)
        for leg in [st.channel_id, *st.live_buyer_legs]:
            try:
                await ari.move(leg, app)
            except AriNotFound:
                pass  # hung up meanwhile: the resync below closes what is gone
            except AriError as exc:
                log.warning("could not move a leg into this daemon's app", call=st.call_id,
                            channel=leg, error=str(exc))
    await resync(dispatcher, ari, app)
    return len(states)
