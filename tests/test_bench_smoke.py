"""A smoke run of the in-process benchmarks (bench/), so that `make bench` cannot rot.

Tiny sizes (a few hundred presses, seconds): it asserts only that the figures are produced
and well formed, never a timing goal. The fake ARI runs as a subprocess on 127.0.0.1.
"""

from __future__ import annotations

import json
import math
import os
import random
from typing import Any

import pytest
import structlog

from bench import inprocess
from bench.procs import percentile, pinned, ratio_interval
from bench.run import headline, run_floor, table


@pytest.fixture(autouse=True)
def _restore_logging() -> Any:
    """The benchmark configures structlog for itself; later tests get the defaults back."""
    yield
    structlog.reset_defaults()


def render_table(figures: dict[str, Any]) -> str:
    """``run.table`` of ``figures``, with the run's own fields (machine, command) filled in."""
    machine = {"cpu": "x", "cores": 1, "memory_gib": 1, "kernel": "k", "python": "3",
               "versions": {}, "commit": "c"}
    return table({**figures, "machine": machine, "command": "pytest", "started_at": "now",
                  "seconds": 1.0})


def _well_formed(summary: dict[str, Any], n: int) -> None:
    assert summary["n"] == n
    for key in ("p50_ms", "p99_ms", "max_ms", "mean_ms"):
        value = summary[key]
        assert isinstance(value, float) and math.isfinite(value) and value >= 0, (key, value)
    assert summary["p50_ms"] <= summary["p99_ms"] <= summary["max_ms"]


async def test_inprocess_benchmarks_produce_well_formed_figures() -> None:
    result = await inprocess.run_inprocess(
        latency_calls=[1, 10], presses=60, press_rate=300.0, bridged_calls=40,
        rates=[60.0, 120.0], step_seconds=0.5, p99_limit_ms=1000.0, log=lambda _: None,
        pin=False)  # the test run keeps its CPUs

    latency = result["latency"]
    assert [row["live_calls"] for row in latency] == [1, 10]
    for row in latency:
        assert row["presses_sent"] == row["presses_answered"] == 60  # none lost
        _well_formed(row["daemon"], 60)
        _well_formed(row["wire"], 60)
        assert len(row["samples_ms"]) == 60
        assert isinstance(row["rss_per_call_bytes"], float)

    throughput = result["throughput"]
    assert throughput["bridged_calls"] == 40
    assert len(throughput["steps"]) >= 1
    for step in throughput["steps"]:
        assert step["sent"] == step["answered"] > 0
        _well_formed(step["daemon"], step["answered"])
        _well_formed(step["wire"], step["answered"])
        assert step["achieved_per_s"] > 0
    assert throughput["sustained_per_s"] >= 0

    rendered = render_table({"inprocess": result})
    assert "DTMF frame -> first REST request, 10 live calls" in rendered
    summary = headline({"inprocess": result})  # the committed summary.json: no raw samples
    assert [row["live_calls"] for row in summary["dtmf_to_request_ms"]] == [
        row["live_calls"] for row in result["latency"]]
    assert summary["presses_per_s"]["sustained"] == throughput["sustained_per_s"]
    assert "samples" not in json.dumps(summary) and len(json.dumps(summary)) < 4000


async def test_floor_app_runs_the_throughput_ramp() -> None:
    """The floor app (bench/floor_app.py, its own process) answers every press of a tiny
    ramp, so the floor row of `make bench` cannot rot either."""
    result = await run_floor(bridged_calls=20, rates=[60.0], step_seconds=0.5,
                             p99_limit_ms=1000.0, log=lambda _: None)
    assert "error" not in result, result.get("error")
    [step] = result["throughput"]["steps"]
    assert step["sent"] == step["answered"] > 0
    _well_formed(step["wire"], step["answered"])


def test_memory_figure_runs_in_a_fresh_process() -> None:
    """`bench/inprocess.py --memory N` (the memory figure's own interpreter) still runs."""
    result = inprocess.measure_memory_in_fresh_process(20, timeout=120)
    assert result["live_calls"] == 20
    assert isinstance(result["rss_per_call_bytes"], float)
    assert result["rss_after_bytes"] > 0 and result["rss_before_bytes"] > 0


def test_ratio_interval_brackets_the_true_ratio_and_is_repeatable() -> None:
    rng = random.Random(3)
    base = [rng.lognormvariate(0.0, 0.4) for _ in range(600)]
    slower = [x * 1.3 for x in (rng.lognormvariate(0.0, 0.4) for _ in range(600))]
    lo, hi = ratio_interval(slower, base, 50)
    assert lo < 1.3 < hi and hi - lo < 0.3  # 600 samples a side: about +-0.1
    assert ratio_interval(slower, base, 50) == (lo, hi)  # seeded
    same_lo, same_hi = ratio_interval(base, base, 99)
    assert same_lo <= 1.0 <= same_hi
    assert all(math.isnan(v) for v in ratio_interval([], base, 50))


def test_the_e2e_row_gives_the_ratio_with_its_interval() -> None:
    rng = random.Random(4)
    minimal = [rng.uniform(0.6, 1.0) for _ in range(200)]
    daemon = [x * 1.5 for x in minimal]
    variants = {name: {"n": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
                       "failed": 0, "samples_ms": ms}
                for name, ms in (("daemon", daemon), ("minimal ARI app", minimal))}
    text = render_table({"e2e": {"variants": variants, "asterisk_version": "22.10.1"}})
    row = next(line for line in text.splitlines() if "daemon / minimal ARI app" in line)
    assert "p50 1.50x (" in row and "**not met**" in row
    ratio = headline({"e2e": {"variants": variants}})["end_to_end_ms"]["ratio_daemon_vs_minimal"]
    assert abs(ratio["p50"] - 1.5) < 1e-9 and abs(ratio["p99"] - 1.5) < 1e-9


def test_pinned_gives_the_cpus_back() -> None:
    before = os.sched_getaffinity(0)
    with pinned(0):
        assert os.sched_getaffinity(0) == {0}
    assert os.sched_getaffinity(0) == before


@pytest.mark.pg
async def test_buyer_reserve_benchmark_produces_well_formed_figures(db: Any, pg_dsn: str) -> None:
    from bench.buyer_reserve import measure

    result = await measure(pg_dsn, 32)
    for key in ("sequential", "dial_path", "contended"):
        _well_formed(result[key], 32)
    assert result["fallbacks"] == 0  # every dial reservation reached PostgreSQL
    assert "buyer limit across daemons: reserve + release, one at a time" in render_table(
        {"buyer_reserve": result})


@pytest.mark.asterisk
@pytest.mark.pg
async def test_scale_out_benchmark_spreads_calls_over_two_daemons(pg_dsn: str) -> None:
    from bench.scale_out import run_scale_out

    admin = pg_dsn.rsplit("/", 1)[0] + "/postgres"
    result = await run_scale_out(calls=6, concurrency=3, admin_dsn=admin, log=lambda _: None)
    one, two = result["setups"]["one daemon"], result["setups"]["two daemons"]
    assert one["failed"] == two["failed"] == 0
    assert one["claims_won"] == [6] and sum(two["claims_won"]) == 6
    assert one["calls_per_s"] > 0 and math.isfinite(two["p50_ms"])
