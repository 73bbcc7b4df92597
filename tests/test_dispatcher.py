"""The dispatcher without Asterisk: a failure while handling one event is logged (in the
daemon log and the call's log) and the call's later events are still handled, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog

from keypress_ari.ari.client import AriClient
from keypress_ari.ari.events import parse_event
from keypress_ari.calllog.ops import CallEvent, Op
from keypress_ari.calls.call import Call
from keypress_ari.calls.context import CallContext, CatalogRef
from keypress_ari.calls.dispatcher import Dispatcher
from keypress_ari.flows.model import Catalog
from keypress_ari.store.log_writer import CallLogWriter
from keypress_ari.store.memory_store import MemoryStore


def event(kind: str, **extra: Any) -> Any:
    channel = {"id": "chan-1", "name": "PJSIP/x-1", "state": "Up",
               "caller": {"name": "", "number": "5551234"}}
    return parse_event({"type": kind, "application": "keypress",
                        "timestamp": "2026-11-24T00:00:00.000+0000", "channel": channel,
                        **extra})


async def test_an_error_in_one_event_is_logged_and_the_call_goes_on(
        monkeypatch: pytest.MonkeyPatch) -> None:
    writer = CallLogWriter(MemoryStore())  # never run: the ops are only observed
    ops: list[Op] = []
    logged = asyncio.Event()

    def observe(op: Op) -> None:
        ops.append(op)
        if isinstance(op, CallEvent) and op.kind == "error":
            logged.set()

    writer.add_listener(observe)
    ari = AriClient("http://127.0.0.1:1/ari", "u", "p", app="keypress")
    dispatcher = Dispatcher(CallContext(ari, writer, CatalogRef(Catalog.empty())))
    handled: list[str] = []
    done = asyncio.Event()

    async def handle(self: Call, ev: Any) -> None:
        handled.append(type(ev).__name__)
        if len(handled) == 1:
            raise RuntimeError("boom")
        if len(handled) == 3:
            done.set()

    monkeypatch.setattr(Call, "handle", handle)
    with structlog.testing.capture_logs() as logs:
        dispatcher.on_event(event("StasisStart", args=[]))
        dispatcher.on_event(event("ChannelDtmfReceived", digit="1", duration_ms=100))
        dispatcher.on_event(event("ChannelDtmfReceived", digit="2", duration_ms=100))
        await asyncio.wait_for(done.wait(), 5)
        assert await dispatcher.idle(5)
        dispatcher.ctx.flush()  # what the writer does before each batch
        await asyncio.wait_for(logged.wait(), 5)
    assert handled == ["StasisStart", "ChannelDtmfReceived", "ChannelDtmfReceived"]
    errors = [o for o in ops if isinstance(o, CallEvent) and o.kind == "error"]
    assert len(errors) == 1 and errors[0].detail["request"] == "handle StasisStart"
    failed = [entry for entry in logs if entry["event"] == "error handling an event"]
    assert len(failed) == 1 and failed[0]["event_type"] == "StasisStart"
    await ari.close()
