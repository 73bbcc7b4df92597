"""In-process benchmarks of the daemon's key press path against the loopback fake ARI.

The daemon side is the daemon's own wiring (see ``keypress_ari/daemon.py``) minus
PostgreSQL: a real :class:`EventStream` connected to the fake's websocket feeds a
:class:`Dispatcher` (``on_event``, as in production); an :class:`AriClient` sends the REST
requests; ``DtmfLatency`` times each key press from the frame's arrival
(``stream.frame_received_at``) to its first REST request (``on_request``), exactly the
daemon's ``keypress_dtmf_to_ari_seconds``. The call log writer runs with a pool that
accepts and discards every batch (rows are still built and JSON-encoded as for
PostgreSQL, the database round trip is left out), so its queue drains as in production.

The fake ARI runs in its own process (``bench/fake_ari.py``), pinned to another CPU than
this one when the machine has two, and generates the events: see its docstring.

Figures:

* ``latency``: N calls waiting at the router prompt (N = 1, 100, 1,000, 10,000), key
  presses at a light rate; every press ends its call (flow: disposition) and the fake
  replaces it (live calls stay at N). Daemon-side p50/p99/max, and wire-to-wire (frame
  written by the fake to request read by the fake).
* ``memory``: RSS growth of this process per live call once N calls wait at the prompt.
* ``throughput``: bridged calls (caller + buyer leg in a bridge), presses on the buyer leg
  matched against the buyer's flows (``mute_consumer``/``unmute_consumer``: one REST
  request each), offered at rising rates until latency degrades.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procs
from bench.procs import (
    OPEN_WAVE,
    FakeAriProcess,
    cpu_seconds,
    fake_ari,
    pin_cpu,
    pinned,
    rss_bytes,
    summarize,
)
from bench.throughput import best_sustained, ramp
from keypress_ari.ari.client import AriClient
from keypress_ari.ari.stream import EventStream
from keypress_ari.calls.context import CatalogRef
from keypress_ari.calls.dispatcher import Dispatcher
from keypress_ari.calls.state import Stage
from keypress_ari.config import CallSettings
from keypress_ari.core import AriEndpoint, build_call_core
from keypress_ari.daemon import settle_heap
from keypress_ari.flows.yamlio import load_catalog_yaml
from keypress_ari.logs import configure_logging
from keypress_ari.metrics import DaemonMetrics
from keypress_ari.store.log_writer import CallLogWriter
from keypress_ari.store.memory_store import MemoryStore

BENCH_DIR = Path(__file__).resolve().parent

CATALOG = """
flow_groups:
  - name: press-one
    redirect_no_key_press: true
    max_attempts: 3
    flows:
      - key: "1"
        filters: [{token: caller_state, op: "==", value: CA}]
        extra_tokens: {interested: "yes"}
        continue_routing: true
      - key: "2"
        disposition: not_interested
      - key: no_key_press
        disposition: no_response
  - name: agent
    flows:
      - {key: "3", call_control_actions: [mute_consumer]}
      - {key: "4", call_control_actions: [unmute_consumer]}
      - {key: "*", call_control_actions: [hangup], disposition: agent_hangup}
routers:
  - {name: main, request_key_press: true, prompt: "sound:beep", press_1_timeout: 300,
     flow_group: press-one, buyers: [acme]}
  - {name: direct, request_key_press: false, buyers: [agent]}
buyers:
  - {name: acme, endpoint: PJSIP/acme}
  - {name: agent, endpoint: PJSIP/agent, forwards_to_external_agent: true,
     flow_group: agent}
numbers:
  - {number: "18005550100", router: main}
  - {number: "18005550200", router: direct}
"""


# --- the daemon side -------------------------------------------------------------------------


@dataclass
class DaemonUnderTest:
    dispatcher: Dispatcher
    stream: EventStream
    ari: AriClient
    calllog: CallLogWriter
    metrics: DaemonMetrics
    latencies: list[float] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def count_stage(self, stage: Stage) -> int:
        return sum(1 for call in self.dispatcher.calls() if call.st.stage is stage)

    async def wait_stage(self, stage: Stage, calls: int, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # bounded by the deadline
            if self.count_stage(stage) >= calls and self.calllog.backlog == 0:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.count_stage(stage)} of {calls} calls {stage.value}")

    async def wait_no_calls(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # bounded by the deadline
            if not self.dispatcher.active_calls:
                return
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        await self.stream.stop()
        self.calllog.close()
        await self.calllog.flush(10)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.ari.close()


async def start_daemon(base_url: str, *, log_level: str = "info",
                       log_batch_size: int = CallSettings().log_batch_size) -> DaemonUnderTest:
    """The daemon's call core, built by the daemon's own wiring (``core.build_call_core``),
    on an in-memory store that keeps nothing (the database is not what is measured)."""
    configure_logging(log_level)
    catalog = load_catalog_yaml(CATALOG, "bench.yaml")
    metrics = DaemonMetrics()
    latencies: list[float] = []

    def observe(seconds: float) -> None:
        latencies.append(seconds)
        metrics.observe_dtmf_to_ari(seconds)

    core = build_call_core(
        AriEndpoint(base_url, "keypress", "keypress-secret", "keypress", request_timeout=10),
        store=MemoryStore(keep=False), catalog=CatalogRef(catalog, 1),
        settings=CallSettings(log_batch_size=log_batch_size), metrics=metrics,
        on_dtmf_latency=observe)
    daemon = DaemonUnderTest(core.dispatcher, core.stream, core.ari, core.calllog, metrics,
                             latencies)
    daemon.tasks.extend(core.start())
    await core.stream.wait_connected(10)
    settle_heap()  # as Daemon.start does once started
    return daemon


# --- the measurements ------------------------------------------------------------------------


async def measure_latency(fake: FakeAriProcess, daemon: DaemonUnderTest, calls: int,
                          presses: int, rate: float) -> dict[str, Any]:
    """N calls waiting at the prompt; ``presses`` key presses at ``rate``/s."""
    await fake.control("reset")
    gc.collect()
    rss_before = rss_bytes()
    started = time.perf_counter()
    # Calls arrive in waves of at most OPEN_WAVE (each settles before the next): live calls
    # are what is measured, not the transient memory of a burst of 10,000 set-ups at once.
    for opened in range(0, calls, OPEN_WAVE):
        wave = min(OPEN_WAVE, calls - opened)
        await fake.control("open", calls=wave, kind="prompt")
        await daemon.wait_stage(Stage.WAITING, opened + wave)
    setup_seconds = time.perf_counter() - started
    await fake.wait_ready(calls)
    gc.collect()
    rss_after = rss_bytes()
    start = len(daemon.latencies)
    cpu0 = cpu_seconds()
    result = await fake.control("press", rate=rate, count=presses, kind="prompt", timeout=30)
    cpu1 = cpu_seconds()
    await daemon.wait_stage(Stage.WAITING, calls, timeout=60)
    inside = daemon.latencies[start:]
    await hangup_all(fake, daemon)
    return {
        "live_calls": calls,
        "presses_sent": result["sent"],
        "presses_answered": result["answered"],
        "rate_per_s": rate,
        "setup_seconds": setup_seconds,
        "daemon": summarize(inside),
        "wire": summarize(result["latencies"]),
        "daemon_cpu_s": cpu1 - cpu0,
        "rss_growth_bytes": rss_after - rss_before,
        "rss_per_call_bytes": (rss_after - rss_before) / calls,
        "samples_ms": [s * 1000 for s in inside],
    }


async def hangup_all(fake: FakeAriProcess, daemon: DaemonUnderTest) -> None:
    """End every call: the fake hangs them up (StasisEnd), the daemon closes them."""
    await fake.control("hangup_all")
    await daemon.wait_no_calls()
    await daemon.calllog.flush(30)


async def measure_memory(calls: int, *, pin: bool = True) -> dict[str, Any]:
    """RSS growth per live call in this process, which must be fresh (nothing measured
    before): a warm-up of 50 calls first (code paths, connection pool), then ``calls`` calls
    opened in waves until all wait at the prompt."""
    if pin:
        pin_cpu(0)
    async with fake_ari(cpu=1 if pin else None) as fake:
        daemon = await start_daemon(fake.base_url, log_level="warning")
        try:
            await fake.control("open", calls=50, kind="prompt")
            await daemon.wait_stage(Stage.WAITING, 50)
            await hangup_all(fake, daemon)
            await fake.control("reset")
            gc.collect()
            before = rss_bytes()
            for opened in range(0, calls, OPEN_WAVE):
                wave = min(OPEN_WAVE, calls - opened)
                await fake.control("open", calls=wave, kind="prompt")
                await daemon.wait_stage(Stage.WAITING, opened + wave)
            gc.collect()
            after = rss_bytes()
            await hangup_all(fake, daemon)
        finally:
            await daemon.stop()
    return {"live_calls": calls, "rss_before_bytes": before, "rss_after_bytes": after,
            "rss_per_call_bytes": (after - before) / calls}


def measure_memory_in_fresh_process(calls: int, timeout: float = 600.0) -> dict[str, Any]:
    """:func:`measure_memory` in a new interpreter (RSS of a used heap says little)."""
    import json
    import subprocess

    out = subprocess.run([sys.executable, "-m", "bench.inprocess", "--memory", str(calls),
                          "--loop", procs.EVENT_LOOP],
                         capture_output=True, text=True, timeout=timeout, check=True,
                         cwd=procs.ROOT)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


async def run_inprocess(*, latency_calls: Sequence[int], presses: int, press_rate: float,
                        bridged_calls: int, rates: Sequence[float], step_seconds: float,
                        p99_limit_ms: float, log: Callable[[str], None] = print,
                        pin: bool = True) -> dict[str, Any]:
    """Latency vs live calls, memory per call, then the throughput ramp of the daemon.

    With ``pin`` (and two CPUs or more) this process is pinned to CPU 0 and the fake ARI to
    CPU 1, so the daemon's figures are for one core."""
    out: dict[str, Any] = {"latency": [], "throughput": {}}
    with pinned(0) if pin else contextlib.nullcontext():  # the CPUs back for what follows
        async with fake_ari(cpu=1 if pin else None) as fake:
            daemon = await start_daemon(fake.base_url, log_level="warning")
            try:
                for calls in latency_calls:
                    r = await measure_latency(fake, daemon, calls, presses, press_rate)
                    d = r["daemon"]
                    log(f"  {calls:>6} live calls: p50 {d['p50_ms']:.3f} ms, p99 "
                        f"{d['p99_ms']:.3f} ms, max {d['max_ms']:.3f} ms ({d['n']} presses)")
                    out["latency"].append(r)
                await fake.control("reset")
                await fake.control("open", calls=bridged_calls, kind="bridged")
                await fake.wait_ready(bridged_calls)
                await daemon.wait_stage(Stage.BRIDGED, bridged_calls)
                steps = await ramp(fake, os.getpid(), rates, step_seconds, p99_limit_ms,
                                   daemon.latencies, log, fake_pid=fake.proc.pid)
                out["throughput"] = {
                    "bridged_calls": bridged_calls,
                    "steps": [s.as_dict() for s in steps],
                    "sustained_per_s": best_sustained(steps, p99_limit_ms),
                    "p99_limit_ms": p99_limit_ms,
                }
                await hangup_all(fake, daemon)
                out["metrics_histogram"] = daemon.metrics.render().count("dtmf_to_ari")
            finally:
                await daemon.stop()
    return out


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="memory per live call, fresh process")
    parser.add_argument("--memory", type=int, required=True, help="live calls")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default=procs.EVENT_LOOP)
    args = parser.parse_args()
    from keypress_ari.cli import loop_factory

    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        print(json.dumps(runner.run(measure_memory(args.memory))))
