"""Fencing covers the call's own timers: while the lease is in doubt, a timer that fires
waits with the held ARI events, in order; once fenced it is dropped with them."""

from __future__ import annotations

from keypress_ari.calls.context import CatalogRef
from keypress_ari.calls.scope import TimerFired
from keypress_ari.config import CallSettings
from keypress_ari.core import AriEndpoint, CallCore, build_call_core
from keypress_ari.flows.model import Catalog
from keypress_ari.metrics import DaemonMetrics
from keypress_ari.store.memory_store import MemoryStore


def gated_core(lease: list[bool]) -> CallCore:
    # Nothing is started: no connection is made to the (unused) ARI address.
    return build_call_core(
        AriEndpoint("http://127.0.0.1:9/ari", "keypress", "secret", "keypress"),
        store=MemoryStore(), catalog=CatalogRef(Catalog(), 1), settings=CallSettings(),
        metrics=DaemonMetrics(), gate=lambda: lease[0])


def test_a_timer_firing_while_the_lease_is_in_doubt_is_held_not_run() -> None:
    lease = [False]
    core = gated_core(lease)
    timer = TimerFired("chan-1", 3)
    core.dispatcher.post(timer)
    assert list(core.held) == [timer]
    assert core.dispatcher.active_calls == 0
    assert core.drop_held() == 1 and not core.held


def test_own_events_go_through_while_the_lease_holds() -> None:
    lease = [True]
    core = gated_core(lease)
    core.dispatcher.post(TimerFired("chan-1", 3))
    assert not core.held  # delivered (no such call here: the dispatcher ignores it)
    lease[0] = False
    core.dispatcher.post(TimerFired("chan-1", 4))
    assert len(core.held) == 1
