"""The call context stages what calls write to the call log (no Asterisk, no PostgreSQL):
rows and call row updates are built when the writer takes a batch, in the order they were
recorded, numbered then, with the time of the record, and a call's state snapshot once."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from keypress_ari.ari.client import AriClient
from keypress_ari.calllog.kinds import EventKind
from keypress_ari.calllog.ops import CallEvent, CallUpdated, Op, WebhookQueued
from keypress_ari.calls.context import CallContext, CatalogRef
from keypress_ari.calls.state import CallState, Stage
from keypress_ari.flows.model import Catalog
from keypress_ari.store.log_writer import CallLogWriter
from keypress_ari.store.memory_store import MemoryStore


def context() -> tuple[CallContext, list[Op]]:
    writer = CallLogWriter(MemoryStore())  # not run: its listeners see each op as it is emitted
    seen: list[Op] = []
    writer.add_listener(seen.append)
    ari = AriClient("http://127.0.0.1:1/ari", "u", "p", app="keypress")
    return CallContext(ari, writer, CatalogRef(Catalog.empty())), seen


def webhook(call_id: str) -> WebhookQueued:
    return WebhookQueued(call_id, "g/1", "http://127.0.0.1:9/hook", "POST", {}, "{}",
                         "6f1c0b8e-8c44-4e0a-9d51-0f5b7f7e2a10")


def test_rows_wait_for_the_writer_and_keep_their_order_and_time() -> None:
    ctx, seen = context()
    st = CallState(call_id="c-1", channel_id="ch-1")
    before = time.time()
    ctx.record(st, EventKind.KEY_PRESS, digit="1", matched=True)
    after = time.time()
    ctx.record(st, EventKind.DISPOSITION, disposition="sale")
    assert seen == [] and st.seq == 0  # staged: nothing built yet
    assert ctx.calllog.backlog == 2  # but counted: a backlog of 0 means nothing in memory
    ctx.calllog._pull()  # what the writer does before each batch
    assert ctx.calllog.backlog == 2 and ctx.staged() == 0
    rows = [op for op in seen if isinstance(op, CallEvent)]
    assert [(r.seq, r.kind) for r in rows] == [(1, "key_press"), (2, "disposition")]
    assert rows[0].detail == {"matched": True, "mode": "stasis"} and rows[0].digit == "1"
    assert before - 0.001 <= rows[0].at.timestamp() <= after + 0.001  # taken at record time
    assert rows[0].at.tzinfo is UTC


def test_other_ops_go_right_behind_the_rows_recorded_before_them() -> None:
    """A webhook commits with the key press row queued right before it."""
    ctx, seen = context()
    st = CallState(call_id="c-2", channel_id="ch-2")
    ctx.record(st, EventKind.KEY_PRESS, digit="5")
    hook = webhook(st.call_id)
    ctx.emit(hook)
    ctx.record(st, EventKind.WEBHOOK_QUEUED)
    ctx.flush()
    assert [getattr(op, "kind", type(op).__name__) for op in seen] == [
        "key_press", "WebhookQueued", "webhook_queued"]
    assert seen[1] is hook


def test_a_call_persisted_twice_is_snapshot_once_after_its_rows() -> None:
    ctx, seen = context()
    st = CallState(call_id="c-3", channel_id="ch-3")
    st.move(Stage.BRIDGED)
    ctx.persist(st)
    ctx.record(st, EventKind.CALL_CONTROL_ACTION, action="mute_consumer")
    st.consumer_muted = True
    ctx.persist(st)
    assert not st.dirty
    ctx.flush()
    assert [type(op).__name__ for op in seen] == ["CallEvent", "CallUpdated"]
    update = seen[1]
    assert isinstance(update, CallUpdated)
    assert update.state["consumer_muted"] is True and update.state["seq"] == 1
    assert update.stage == "bridged" and update.ended_at is None
    st.consumer_muted = False  # the snapshot is a copy
    assert update.state["consumer_muted"] is True


def test_an_end_noted_stays_when_the_call_is_persisted_again() -> None:
    ctx, seen = context()
    st = CallState(call_id="c-4", channel_id="ch-4")
    ctx.persist(st)
    ended = datetime.now(UTC)
    ctx.persist(st, ended_by="caller", end_reason="hung up by caller while bridged")
    ctx.persist(st)
    ctx.flush()
    updates = [op for op in seen if isinstance(op, CallUpdated)]
    assert len(updates) == 1
    assert updates[0].ended_by == "caller"
    assert updates[0].end_reason == "hung up by caller while bridged"
    assert updates[0].ended_at is not None
    assert abs((updates[0].ended_at - ended).total_seconds()) < 1
    ctx.flush()
    assert len(seen) == 1  # nothing staged twice
