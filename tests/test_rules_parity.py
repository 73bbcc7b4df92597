"""The dry run cannot drift from a real call: the same scenarios go through ``simulate`` and
through the daemon's own call core (``core.build_call_core``, the real ARI client and event
stream, the real ``Call``), and the outcomes must agree: which flow matched or why none did,
ignored presses, the call control actions run, tokens set, the disposition, continue routing.

The PBX side is the shared loopback fake ARI (``bench/fake_ari.py``) and the store is in
memory: this is a unit test of call logic; the same flows on the real Asterisk and
PostgreSQL are in test_call_path.py and test_live_control.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from bench.fake_ari import BRIDGED_NUMBER, PROMPT_NUMBER, FakeAri
from keypress_ari.calllog.kinds import EventKind, press_outcome
from keypress_ari.calllog.ops import CallEvent, CallOpened, Op
from keypress_ari.calls.context import CatalogRef
from keypress_ari.config import CallSettings
from keypress_ari.core import AriEndpoint, CallCore, build_call_core
from keypress_ari.flows.model import Catalog
from keypress_ari.flows.yamlio import load_catalog_yaml
from keypress_ari.metrics import DaemonMetrics
from keypress_ari.simulate import SimulationResult, simulate
from keypress_ari.store.memory_store import MemoryStore

CATALOG = f"""
flow_groups:
  - name: prompt
    redirect_no_key_press: true
    max_attempts: 2
    flows:
      - {{key: "1", name: ca, filters: [{{token: caller_state, op: "==", value: CA}}],
         extra_tokens: {{lead: hot}}, continue_routing: true}}
      - {{key: "1", name: elsewhere, disposition: out_of_state}}
      - {{key: "2", disposition: not_interested, call_control_actions: [block_caller]}}
      - {{key: no_key_press, disposition: no_response}}
  - name: agent
    flows:
      - {{key: "3", call_control_actions: [mute_consumer]}}
      - {{key: "5", buyer_conference_time_limit: 30, call_control_actions: [unmute_consumer]}}
      - {{key: "6", filters: [{{token: lead, op: "==", value: hot}}], disposition: sold}}
      - {{key: "8", call_control_actions: [hold_consumer, hangup, unhold_consumer]}}
routers:
  - {{name: main, request_key_press: true, prompt: "sound:beep", press_1_timeout: 0.3,
     flow_group: prompt, buyers: [agent]}}
  - {{name: direct, request_key_press: false, buyers: [agent]}}
buyers:
  - {{name: agent, endpoint: PJSIP/agent, forwards_to_external_agent: true,
     flow_group: agent}}
numbers:
  - {{number: "{PROMPT_NUMBER}", router: main}}
  - {{number: "{BRIDGED_NUMBER}", router: direct}}
"""

# What a flow's run leaves in the call log, after its key press row.
_AFTER = {EventKind.TOKENS_SET, EventKind.CALL_CONTROL_ACTION, EventKind.DISPOSITION,
          EventKind.CONTINUE_ROUTING, EventKind.REPROMPT}


@dataclass
class Harness:
    fake: FakeAri
    core: CallCore
    ops: list[Op] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def observe(self, op: Op) -> None:
        self.ops.append(op)
        self.changed.set()

    async def until(self, what: str, found: Callable[[], Any], timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while (value := found()) is None or value is False:  # bounded by the deadline
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"waited {timeout}s for {what}")
            self.changed.clear()
            self.core.ctx.flush()  # what the writer does before each batch
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.05))
        return value

    def rows(self, call_id: str) -> list[CallEvent]:
        return [op for op in self.ops if isinstance(op, CallEvent) and op.call_id == call_id]

    async def open(self, kind: str, args: list[str]) -> tuple[str, str]:
        """A call entered; (its call id, the channel that presses)."""
        call = await self.fake.open_call(kind, args=args)
        opened = await self.until("the call opened", lambda: next(
            (op for op in self.ops if isinstance(op, CallOpened) and op.channel_id == call.key),
            None))
        ready = EventKind.PROMPT_STARTED if kind == "prompt" else EventKind.BRIDGED
        await self.until(f"{ready} of {call.key}", lambda: any(
            r.kind == ready for r in self.rows(opened.call_id)))
        return opened.call_id, call.key if kind == "prompt" else str(call.buyer)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    fake = FakeAri()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    catalog = load_catalog_yaml(CATALOG, "parity.yaml")
    metrics = DaemonMetrics()
    core = build_call_core(
        AriEndpoint(f"http://127.0.0.1:{port}/ari", "keypress", "secret", "keypress"),
        store=MemoryStore(), catalog=CatalogRef(catalog, 1), settings=CallSettings(),
        metrics=metrics)
    h = Harness(fake, core)
    core.calllog.add_listener(h.observe)
    tasks = core.start()
    await core.stream.wait_connected(5)
    try:
        yield h
    finally:
        await core.stream.stop()
        core.calllog.close()
        await core.calllog.flush(5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await core.ari.close()
        await runner.cleanup()


def catalog() -> Catalog:
    return load_catalog_yaml(CATALOG, "parity.yaml")


def dry_run_summary(r: SimulationResult) -> dict[str, Any]:
    run = r.would_run
    return {
        "outcome": r.outcome,
        "flow": r.matched if r.outcome != "no_match" else None,
        "actions": [a["action"] for a in run.call_control_actions] if run else [],
        "tokens": dict(run.tokens) if run else {},
        "disposition": run.disposition if run else None,
        "continue_routing": bool(run and run.continue_routing),
        "misses": [m.flow for m in r.misses],
    }


def call_summary(rows: list[CallEvent], press: CallEvent | None) -> dict[str, Any]:
    after = rows[rows.index(press) + 1:] if press is not None else rows
    nkp = next((r for r in rows if r.kind == EventKind.NO_KEY_PRESS), None)
    outcome = press_outcome(press.detail) if press is not None else (
        "matched" if nkp is not None and nkp.flow else "no_match")
    routed = [r for r in after if r.kind == EventKind.CONTINUE_ROUTING]
    return {
        "outcome": outcome,
        "flow": (press.flow if press is not None and outcome != "no_match"
                 else nkp.flow if nkp is not None else None),
        "actions": [r.detail["action"] for r in after if r.kind == EventKind.CALL_CONTROL_ACTION],
        "tokens": next((r.detail["tokens"] for r in after if r.kind == EventKind.TOKENS_SET
                        and r.detail.get("source") == "flow"), {}),
        "disposition": next((r.detail["disposition"] for r in after
                             if r.kind == EventKind.DISPOSITION), None),
        "continue_routing": any(r.detail.get("reason") == "flow says continue routing"
                                for r in routed),
    }


# (name, kind of call, Stasis args, digit (None: nothing pressed), buyer seconds shift)
SCENARIOS = [
    ("prompt: filtered flow matches", "prompt", ["caller_state=CA"], "1", None),
    ("prompt: filter fails, next flow for the key", "prompt", ["caller_state=NY"], "1", None),
    ("prompt: a disposition with block_caller", "prompt", [], "2", None),
    ("prompt: no flow for the key: re-prompt", "prompt", [], "7", None),
    ("prompt: nothing pressed: the no_key_press flow", "prompt", [], None, None),
    ("buyer: a call control action", "bridged", [], "3", None),
    ("buyer: within the conference time limit", "bridged", [], "5", 1.0),
    ("buyer: past the conference time limit: ignored", "bridged", [], "5", 60.0),
    ("buyer: filter fails, no other flow", "bridged", [], "6", None),
    ("buyer: no flow for the key", "bridged", [], "9", None),
    ("buyer: actions after a hangup never run", "bridged", [], "8", None),
]


@pytest.mark.parametrize(("name", "kind", "args", "digit", "seconds"), SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])
async def test_the_dry_run_says_what_a_call_does(
        harness: Harness, name: str, kind: str, args: list[str], digit: str | None,
        seconds: float | None) -> None:
    call_id, channel = await harness.open(kind, args)
    if seconds is not None:  # the buyer entered the conference this long ago
        harness.core.ctx.clock = lambda: time.time() + seconds
    if digit is not None:
        await harness.fake.press(channel, digit)
        press = await harness.until("the key press row", lambda: next(
            (r for r in harness.rows(call_id) if r.kind == EventKind.KEY_PRESS), None))
    else:
        press = None
        await harness.until("the no-key-press path", lambda: any(
            r.kind == EventKind.NO_KEY_PRESS for r in harness.rows(call_id)), timeout=5)
    assert await harness.core.dispatcher.idle(5)
    harness.core.ctx.flush()
    await harness.until("the flow's rows", lambda: press is None or not press.detail.get(
        "matched") or press.detail.get("ignored") or any(
        r.kind in _AFTER for r in harness.rows(call_id)[harness.rows(call_id).index(press):]))
    real = call_summary(harness.rows(call_id), press)

    tokens = dict(a.split("=", 1) for a in args)
    if kind == "prompt":
        dry = simulate(catalog(), number=PROMPT_NUMBER, digit=digit or "no_key_press",
                       tokens=tokens, stage="prompt")
    else:
        dry = simulate(catalog(), number=BRIDGED_NUMBER, digit=digit or "", leg="buyer",
                       buyer="agent", tokens=tokens, buyer_seconds=seconds)
    expected = dry_run_summary(dry)
    misses = expected.pop("misses")
    if press is not None and not press.detail.get("matched"):
        assert press.detail["reason"] in dry.reason  # the same words for why
    assert real == expected, dry.render()
    if name.endswith("next flow for the key"):
        assert misses == ["prompt/ca"]  # and the dry run says why the first did not match
