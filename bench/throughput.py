"""The throughput ramp: presses on bridged calls offered at rising rates until latency
degrades, for any app connected to the fake ARI (the daemon in process, the aioari and floor
apps in their own processes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.procs import FakeAriProcess, cpu_seconds, summarize


@dataclass
class Step:
    rate: float
    sent: int
    answered: int
    achieved_per_s: float
    app_cpu_s: float
    daemon: dict[str, float | int] | None
    wire: dict[str, float | int]
    fake_cpu_s: float | None = None  # the fake ARI's CPU over the step (is it the limit?)

    @property
    def presses_per_cpu_s(self) -> float:
        return self.answered / self.app_cpu_s if self.app_cpu_s > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"rate_per_s": self.rate, "sent": self.sent, "answered": self.answered,
                "achieved_per_s": self.achieved_per_s, "app_cpu_s": self.app_cpu_s,
                "presses_per_cpu_s": self.presses_per_cpu_s, "daemon": self.daemon,
                "wire": self.wire, "fake_cpu_s": self.fake_cpu_s}


def degraded(step: Step, p99_limit_ms: float) -> bool:
    """Latency degraded: presses lost, rate not kept, or the wire p99 (the same measure for
    the daemon and the library app) over the limit."""
    p99 = float(step.wire["p99_ms"])
    return (step.answered < step.sent or step.achieved_per_s < 0.95 * step.rate
            or p99 > p99_limit_ms)


async def ramp(fake: FakeAriProcess, app_pid: int, rates: Sequence[float], seconds: float,
               p99_limit_ms: float, daemon_latencies: list[float] | None = None,
               log: Callable[[str], None] = print, fake_pid: int | None = None) -> list[Step]:
    """Offer presses on bridged calls at each rate for ``seconds``; stop at the first rate
    whose latency degraded twice in a row (a degraded step is run once more: one pause of the
    machine or of the fake should not decide the limit; both are recorded). With
    ``fake_pid`` the fake ARI's CPU is recorded too."""
    steps: list[Step] = []
    for rate in rates:
        for attempt in (1, 2):
            step = await _step(fake, app_pid, rate, seconds, daemon_latencies, fake_pid)
            steps.append(step)
            span = step.answered / step.achieved_per_s if step.achieved_per_s > 0 else 0.0
            fake_note = (f", fake ARI {step.fake_cpu_s / span:.0%} CPU"
                         if step.fake_cpu_s is not None and span > 0 else "")
            log(f"  {rate:>8.0f}/s offered: {step.achieved_per_s:8.0f}/s handled, "
                f"{step.answered}/{step.sent} answered, wire p99 "
                f"{float(step.wire['p99_ms']):.2f} ms, {step.presses_per_cpu_s:.0f} presses per "
                f"CPU-second{fake_note}{' (repeated)' if attempt == 2 else ''}")
            await asyncio.sleep(0.5)
            if not degraded(step, p99_limit_ms):
                break
        else:
            break  # degraded twice: the limit
    return steps


async def _step(fake: FakeAriProcess, app_pid: int, rate: float, seconds: float,
                daemon_latencies: list[float] | None, fake_pid: int | None) -> Step:
    count = max(10, int(rate * seconds))
    start = len(daemon_latencies) if daemon_latencies is not None else 0
    cpu0 = cpu_seconds(app_pid)
    fake0 = cpu_seconds(fake_pid) if fake_pid is not None else 0.0
    result = await fake.control("press", rate=rate, count=count, kind="bridged",
                                timeout=max(10.0, seconds * 3))
    cpu1 = cpu_seconds(app_pid)
    fake1 = cpu_seconds(fake_pid) if fake_pid is not None else 0.0
    span = max(1e-9, result["last_answered"] - result["first_sent"])
    inside = daemon_latencies[start:] if daemon_latencies is not None else None
    return Step(rate=rate, sent=result["sent"], answered=result["answered"],
                achieved_per_s=result["answered"] / span, app_cpu_s=cpu1 - cpu0,
                daemon=summarize(inside) if inside is not None else None,
                wire=summarize(result["latencies"]),
                fake_cpu_s=fake1 - fake0 if fake_pid is not None else None)


def best_sustained(steps: Sequence[Step], p99_limit_ms: float) -> float:
    ok = [s.achieved_per_s for s in steps if not degraded(s, p99_limit_ms)]
    return max(ok) if ok else 0.0
