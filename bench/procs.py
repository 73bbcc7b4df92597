"""What every benchmark shares: statistics, /proc readings, the event loop setting, and the
loopback fake ARI run in its own process (``bench/fake_ari.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]  # bench scripts run as `python -m bench.X` here
OPEN_WAVE = 500  # calls opened at once on the fake (each wave settles first)
# The event loop every measured program runs on: the daemon's default ([runtime] event_loop),
# given to the aioari and floor apps too so that ratios compare designs, not loops. Set once
# by bench/run.py from its --loop; read at call time.
EVENT_LOOP = "uvloop"
API_DOCS = Path("/var/cache/keypress-ari/asterisk-sid/usr/share/asterisk/rest-api")


# --- statistics ------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summarize(seconds: Sequence[float]) -> dict[str, float | int]:
    """p50/p99/max/mean in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
    }


def ratio_interval(a: Sequence[float], b: Sequence[float], q: float, *,
                   resamples: int = 2000, level: float = 0.95,
                   seed: int = 6) -> tuple[float, float]:
    """A bootstrap interval (``level``, percentile method) for percentile(a, q) /
    percentile(b, q): how far the ratio of two measured percentiles could be from the
    machine's true one, from the samples' own spread. Seeded: the same samples give the same
    interval. (NaN, NaN) when either side has no samples."""
    if not a or not b:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    ratios = sorted(
        percentile(rng.choices(a, k=len(a)), q) / percentile(rng.choices(b, k=len(b)), q)
        for _ in range(resamples))
    tail = (1.0 - level) / 2
    return ratios[int(tail * resamples)], ratios[min(resamples - 1, int((1 - tail) * resamples))]


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size from /proc (Linux)."""
    path = f"/proc/{pid or 'self'}/statm"
    pages = int(Path(path).read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid or 'self'}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# --- the fake ARI process ------------------------------------------------------------------


@dataclass
class FakeAriProcess:
    proc: asyncio.subprocess.Process
    port: int
    session: aiohttp.ClientSession

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ari"

    async def control(self, op: str, **params: Any) -> dict[str, Any]:
        """One control request; a ``press`` waits up to its run's length plus ``timeout``."""
        url = f"http://127.0.0.1:{self.port}/bench/{op}"
        query = {k: str(v) for k, v in params.items()}
        method = "GET" if op == "stats" else "POST"
        budget = 300.0
        if op == "press":
            run = float(params.get("count", 100)) / float(params.get("rate", 100))
            budget = run * 3 + 10 + float(params.get("timeout", 30)) + 10  # the fake's bounds
        async with self.session.request(method, url, params=query,
                                        timeout=aiohttp.ClientTimeout(total=budget)) as resp:
            resp.raise_for_status()
            data: dict[str, Any] = await resp.json()
            return data

    async def wait_ready(self, calls: int, timeout: float = 120.0) -> None:
        """Until the fake counts ``calls`` calls ready for key presses."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # bounded by the deadline
            stats = await self.control("stats")
            if stats["ready"] >= calls:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"only {stats['ready']} of {calls} calls ready after {timeout}s")


def pin_cpu(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(0, {cpu})


@contextlib.contextmanager
def pinned(cpu: int) -> Iterator[None]:
    """This process on ``cpu`` only, then back on the CPUs it had. Every process started
    meanwhile inherits the pinning: the end-to-end and SIP figures, which come after the
    in-process ones, once ran Asterisk and both apps on a single core because of it."""
    if not hasattr(os, "sched_getaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    pin_cpu(cpu)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _fake_command(ready: Path, cpu: int | None, prompt_ms: float) -> list[str]:
    cmd = [sys.executable, "-m", "bench.fake_ari", "--port", "0", "--ready-file", str(ready),
           "--prompt-ms", str(prompt_ms), "--max-seconds", "3600"]
    if API_DOCS.is_dir():
        cmd += ["--api-docs", str(API_DOCS)]
    if cpu is not None and (os.cpu_count() or 1) > cpu:
        cmd += ["--cpu", str(cpu)]
    return cmd


def _read_port(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


async def stop_process(proc: asyncio.subprocess.Process, timeout: float = 5.0) -> None:
    """SIGTERM, wait (bounded), SIGKILL; always reaped."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.wait_for(proc.wait(), timeout)


@contextlib.asynccontextmanager
async def fake_ari(*, cpu: int | None = 1, prompt_ms: float = 0.0) -> AsyncIterator[
        FakeAriProcess]:
    """Start ``bench/fake_ari.py`` (pinned to ``cpu`` if the machine has it), stop it after."""
    with tempfile.TemporaryDirectory(prefix="kp-fake-ari-") as tmp:
        ready = Path(tmp) / "port"
        proc = await asyncio.create_subprocess_exec(*_fake_command(ready, cpu, prompt_ms),
                                                    stdin=asyncio.subprocess.DEVNULL, cwd=ROOT)
        try:
            deadline = time.monotonic() + 20
            port = _read_port(ready)
            while port is None:  # bounded by the deadline
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fake ARI did not start (exit {proc.returncode})")
                await asyncio.sleep(0.02)
                port = _read_port(ready)
            async with aiohttp.ClientSession() as session:
                yield FakeAriProcess(proc, port, session)
        finally:
            await stop_process(proc)
