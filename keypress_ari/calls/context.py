"""What every call shares: the ARI client, the call log, the current catalog, settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from keypress_ari.ari.client import AriClient
from keypress_ari.calllog.kinds import MODE_KINDS, EventKind
from keypress_ari.calllog.ops import CallEvent, CallUpdated, Op
from keypress_ari.calls.blocklist import Blocklist
from keypress_ari.calls.buyer_limits import BuyerLimits
from keypress_ari.calls.state import CallState
from keypress_ari.config import CallSettings
from keypress_ari.flows.model import Catalog
from keypress_ari.store.log_writer import CallLogWriter


@dataclass(slots=True)
class CatalogRef:
    """The catalog in force; swapped whole on reload (readers never see a half-loaded one)."""

    current: Catalog
    version: int = 0


# A call log row recorded but not yet built: (call, kind, leg, digit, flow, detail, when).
_Staged = tuple[CallState, str, str | None, str | None, str | None, dict[str, Any], float]
# A call whose row is to be updated: (call, ended_by, end_reason, when it ended).
_Dirty = tuple[CallState, str | None, str | None, float | None]


@dataclass(slots=True)
class CallContext:
    """What every call shares. It also stages what calls write to the call log.

    Recording a row or persisting a call's state on the key press path only notes it
    (an append, a dict store): the rows and the call rows' snapshots are built by
    :meth:`flush`, which the call log writer runs when it takes its next batch (its linger
    after a wake-up, ``CallLogWriter.linger``). So a press's request to Asterisk leaves
    before any of that work, and the work is done after Asterisk has acted, not while it
    acts (measured in ``bench/results/profile.md``: on a small machine the daemon building
    rows while Asterisk hangs up slowed the hangup). A call's state persisted twice before a
    batch is snapshot once, as it is then.
    """

    ari: AriClient
    calllog: CallLogWriter
    catalog: CatalogRef
    settings: CallSettings = field(default_factory=CallSettings)
    limits: BuyerLimits = field(default_factory=BuyerLimits)  # buyers' max_concurrency
    blocklist: Blocklist = field(default_factory=Blocklist)
    app: str = "keypress"
    owner: str | None = None  # this daemon's name in the cluster (calls' ``owner``)
    clock: Callable[[], float] = time.time  # wall clock for time limits (tests may shift it)
    is_connected: Callable[[], bool] = lambda: True  # the ARI events stream is up
    _staged: list[_Staged] = field(default_factory=list)
    _dirty: dict[str, _Dirty] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.calllog.add_source(self.flush, self.staged)

    def staged(self) -> int:
        """Rows and call updates noted and not yet queued."""
        return len(self._staged) + len(self._dirty)

    def record(
        self,
        st: CallState,
        kind: EventKind,
        *,
        leg: str | None = "caller",
        digit: str | None = None,
        flow: str | None = None,
        **detail: Any,
    ) -> None:
        """Append one row to the call's log (never waits). Its time is taken now; it is
        numbered and queued by :meth:`flush`, in the order of the calls to ``record`` and
        :meth:`emit`."""
        if kind in MODE_KINDS:
            detail["mode"] = st.mode
        staged = self._staged
        staged.append((st, kind, leg, digit, flow, detail, time.time()))
        if len(staged) == 1:
            self.calllog.wake()

    def emit(self, op: Op) -> None:
        """Queue an op other than a row (call opened, webhook, blocked caller) right behind
        the rows recorded before it (a webhook commits with its key press row)."""
        if self._staged:
            self._flush_rows()
        self.calllog.emit(op)

    def persist(self, st: CallState, *, ended_by: str | None = None,
                end_reason: str | None = None) -> None:
        """Have the call row updated (stage, tokens, legs, disposition, snapshot) with the
        call's state as it is at the next :meth:`flush`; ``ended_by`` closes the row."""
        st.dirty = False
        dirty = self._dirty
        if ended_by is not None:
            dirty[st.call_id] = (st, ended_by, end_reason, time.time())
        elif st.call_id not in dirty:
            dirty[st.call_id] = (st, None, None, None)
        else:
            return  # already to be snapshot (an end, if noted, stays)
        if len(dirty) == 1:
            self.calllog.wake()

    def flush(self) -> None:
        """Queue the staged rows, then the call rows' updates (snapshots taken now: they
        hold the last row's sequence number)."""
        if self._staged:
            self._flush_rows()
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        emit = self.calllog.emit
        for st, ended_by, end_reason, ended in dirty.values():
            snapshot = st.snapshot()  # its own copies: the op shares them
            emit(CallUpdated(
                call_id=st.call_id,
                stage=st.stage.value,
                tokens=snapshot["tokens"],
                legs=snapshot["legs"],
                disposition=st.disposition,
                state=snapshot,
                ended_at=datetime.fromtimestamp(ended, UTC) if ended is not None else None,
                ended_by=ended_by,
                end_reason=end_reason,
            ))

    def _flush_rows(self) -> None:
        staged, self._staged = self._staged, []
        emit = self.calllog.emit
        for st, kind, leg, digit, flow, detail, at in staged:
            emit(CallEvent(st.call_id, st.next_seq(), datetime.fromtimestamp(at, UTC), leg,
                           kind, digit, flow, detail))
