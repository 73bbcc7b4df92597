"""What every call shares: the ARI client, the call log, the current catalog, settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from keypress_ari.ari.client import AriClient
from keypress_ari.calls.blocklist import Blocklist
from keypress_ari.calls.routing import BuyerLoad
from keypress_ari.calls.state import CallState
from keypress_ari.config import CallSettings
from keypress_ari.flows.model import Catalog
from keypress_ari.store.calllog import CallEvent, CallLogWriter, CallUpdated


@dataclass(slots=True)
class CatalogRef:
    """The catalog in force; swapped whole on reload (readers never see a half-loaded one)."""

    current: Catalog
    version: int = 0


@dataclass(slots=True)
class CallContext:
    ari: AriClient
    calllog: CallLogWriter
    catalog: CatalogRef
    settings: CallSettings = field(default_factory=CallSettings)
    load: BuyerLoad = field(default_factory=BuyerLoad)
    blocklist: Blocklist = field(default_factory=Blocklist)
    app: str = "keypress"
    clock: Callable[[], float] = time.time  # wall clock for time limits (tests may shift it)
    is_connected: Callable[[], bool] = lambda: True  # the ARI events stream is up

    def record(
        self,
        st: CallState,
        kind: str,
        *,
        leg: str | None = "caller",
        digit: str | None = None,
        flow: str | None = None,
        **detail: Any,
    ) -> None:
        """Append one row to the call's log (queued; never waits)."""
        self.calllog.emit(
            CallEvent(st.call_id, st.next_seq(), datetime.now(UTC), leg, kind, digit, flow, detail)
        )

    def persist(self, st: CallState, *, ended_by: str | None = None,
                end_reason: str | None = None) -> None:
        """Queue the call row's new state (stage, tokens, legs, disposition, snapshot)."""
        st.dirty = False
        snapshot = st.snapshot()  # its own copies: the op may share them
        self.calllog.emit(
            CallUpdated(
                call_id=st.call_id,
                stage=st.stage.value,
                tokens=snapshot["tokens"],
                legs=snapshot["legs"],
                disposition=st.disposition,
                state=snapshot,
                ended_at=datetime.now(UTC) if ended_by else None,
                ended_by=ended_by,
                end_reason=end_reason,
            )
        )
