"""``make bench``: every benchmark figure side by side in one run; a table, JSON and PNGs.

    bench/.venv/bin/python -m bench.run [--quick] [--skip-library] [--skip-floor] [--skip-e2e]
                                        [--skip-sip] [--skip-buyer-reserve] [--out bench/results]

Writes ``OUT/table.md`` (the table printed at the end), ``OUT/summary.json`` (the headline
figures with their goals and ratios, the machine, the versions and this command) and the
plots ``OUT/*.png``, all committed; and ``OUT/raw/bench.json`` (every figure and raw sample,
git-ignored). A benchmark
never fails a build: goals missed are reported, not raised. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

from bench import inprocess, procs, throughput  # noqa: E402

GOALS = {
    "p99_at_10k_ms": 1.0,
    "presses_per_core": 20_000,
    "ratio_vs_library": 10.0,
    "kib_per_call": 20.0,
    "e2e_ratio": 1.1,
}


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    versions = {}
    for package in ("aiohttp", "pydantic", "pydantic-core", "structlog", "asyncpg", "orjson",
                    "uvloop", "yarl",
                    "aioari", "aioswagger11", "matplotlib"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    commit = "?"
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                                "keypress_ari"], capture_output=True, text=True).stdout
        commit += "+local changes" if dirty.strip() else ""
    return {
        "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(), "os": platform.platform(),
        "python": platform.python_version(), "versions": versions, "commit": commit,
    }


# --- the same ramp through a standalone app: aioari, and the floor ---------------------------


async def run_app(script: str, name: str, *, bridged_calls: int, rates: list[float],
                  step_seconds: float, p99_limit_ms: float,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """The throughput ramp through ``bench/<script>`` in its own process (CPU 0, the fake
    ARI on CPU 1), as the daemon's; ``name`` labels it in the result and errors."""
    async with procs.fake_ari(cpu=1) as fake:
        cmd = [sys.executable, "-m", f"bench.{script.removesuffix('.py')}",
               "--url", f"http://127.0.0.1:{fake.port}/", "--max-seconds", "1800"]
        cmd += ["--loop", procs.EVENT_LOOP]
        if (os.cpu_count() or 1) > 1:
            cmd += ["--cpu", "0"]
        proc = await asyncio.create_subprocess_exec(*cmd, stdin=asyncio.subprocess.DEVNULL,
                                                    cwd=ROOT)
        try:
            deadline = time.monotonic() + 20
            while (await fake.control("stats"))["sockets"] < 1:  # bounded by the deadline
                if proc.returncode is not None or time.monotonic() > deadline:
                    return {"error": f"the {name} app did not connect (exit {proc.returncode})"}
                await asyncio.sleep(0.1)
            rss0 = procs.rss_bytes(proc.pid)
            for opened in range(0, bridged_calls, procs.OPEN_WAVE):
                wave = min(procs.OPEN_WAVE, bridged_calls - opened)
                await fake.control("open", calls=wave, kind="bridged")
                await fake.wait_ready(opened + wave)
            rss1 = procs.rss_bytes(proc.pid)
            steps = await throughput.ramp(fake, proc.pid, rates, step_seconds, p99_limit_ms,
                                         None, log, fake_pid=fake.proc.pid)
        finally:
            await procs.stop_process(proc)
    return {
        "app": name,
        "throughput": {
            "bridged_calls": bridged_calls,
            "steps": [s.as_dict() for s in steps],
            "sustained_per_s": throughput.best_sustained(steps, p99_limit_ms),
            "p99_limit_ms": p99_limit_ms,
        },
        "rss_per_call_bytes": (rss1 - rss0) / bridged_calls,
    }


async def run_library(*, bridged_calls: int, rates: list[float], step_seconds: float,
                      p99_limit_ms: float, log: Callable[[str], None]) -> dict[str, Any]:
    """The same throughput ramp through bench/library_app.py (aioari), in its own process."""
    try:
        importlib.metadata.version("aioari")
    except importlib.metadata.PackageNotFoundError:
        return {"error": "aioari is not installed in this venv (make bench installs it)"}
    result = await run_app("library_app.py", "aioari", bridged_calls=bridged_calls,
                           rates=rates, step_seconds=step_seconds,
                           p99_limit_ms=p99_limit_ms, log=log)
    return {"library": "aioari", **result} if "error" not in result else result


async def run_floor(*, bridged_calls: int, rates: list[float], step_seconds: float,
                    p99_limit_ms: float, log: Callable[[str], None]) -> dict[str, Any]:
    """The same throughput ramp through bench/floor_app.py (stdlib asyncio, raw protocols,
    no log, no flows): the floor cost of a press in Python, in its own process."""
    return await run_app("floor_app.py", "floor", bridged_calls=bridged_calls, rates=rates,
                         step_seconds=step_seconds, p99_limit_ms=p99_limit_ms, log=log)


# --- the table ---------------------------------------------------------------------------------


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _goal(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def best_cpu_rate(steps: list[dict[str, Any]], p99_limit_ms: float = 10.0) -> float:
    """Presses per CPU-second of the app at its busiest sustained step (not degraded: no
    press lost, the rate kept, wire p99 within the limit; at least 0.2 CPU-second used)."""
    rates = [s["presses_per_cpu_s"] for s in steps
             if s.get("app_cpu_s", 0) > 0.2 and s["answered"] == s["sent"]
             and s["achieved_per_s"] >= 0.95 * s["rate_per_s"]
             and float(s["wire"]["p99_ms"]) <= p99_limit_ms]
    return max(rates) if rates else float("nan")


def e2e_interval(daemon: dict[str, Any], minimal: dict[str, Any],
                 q: float) -> tuple[float, float]:
    """The bootstrap interval of the daemon / minimal app ratio at percentile ``q``."""
    return procs.ratio_interval(daemon.get("samples_ms") or [],
                                minimal.get("samples_ms") or [], q)


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The figures the goals are about, with their ratios: small enough to commit and diff."""
    out: dict[str, Any] = {k: result.get(k) for k in ("command", "started_at", "machine",
                                                        "seconds")}
    ip = result.get("inprocess") or {}
    out["dtmf_to_request_ms"] = [
        {"live_calls": r["live_calls"], "p50": r["daemon"]["p50_ms"],
         "p99": r["daemon"]["p99_ms"], "max": r["daemon"]["max_ms"],
         "wire_p99": r["wire"]["p99_ms"]} for r in ip.get("latency", [])]
    mem = result.get("memory") or {}
    out["bytes_per_live_call"] = mem.get("rss_per_call_bytes")
    tp = ip.get("throughput") or {}
    lib = (result.get("library") or {}).get("throughput") or {}
    floor = (result.get("floor") or {}).get("throughput") or {}
    if tp:
        cpu = best_cpu_rate(tp["steps"])
        out["presses_per_s"] = {"sustained": tp["sustained_per_s"], "per_cpu_second": cpu}
        for name, other in (("aioari_app", lib), ("floor", floor)):
            if other:
                other_cpu = best_cpu_rate(other["steps"])
                out["presses_per_s"][f"vs_{name}_per_cpu_second"] = (
                    cpu / other_cpu if other_cpu else None)
    variants = (result.get("e2e") or {}).get("variants") or {}
    out["end_to_end_ms"] = {name: {"p50": v["p50_ms"], "p99": v["p99_ms"], "n": v["n"]}
                            for name, v in variants.items()}
    if "daemon" in variants and "minimal ARI app" in variants:
        d, m = variants["daemon"], variants["minimal ARI app"]
        out["end_to_end_ms"]["ratio_daemon_vs_minimal"] = {
            "p50": d["p50_ms"] / m["p50_ms"], "p99": d["p99_ms"] / m["p99_ms"]}
    out["goals"] = GOALS
    return out


def table(result: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str]] = []
    ip = result.get("inprocess") or {}
    for row in ip.get("latency", []):
        d, w = row["daemon"], row["wire"]
        ok = None
        if row["live_calls"] >= 10_000:
            ok = d["p99_ms"] < GOALS["p99_at_10k_ms"]
        rows.append((
            f"DTMF frame -> first REST request, {row['live_calls']:,} live calls "
            f"({row['presses_answered']} presses at {row['rate_per_s']:.0f}/s)",
            f"p50 {_f(d['p50_ms'], 3)} / p99 {_f(d['p99_ms'], 3)} / max {_f(d['max_ms'], 3)} ms"
            f" (wire p99 {_f(w['p99_ms'], 2)} ms)",
            "p99 < 1 ms at 10,000" if ok is not None else "",
            _goal(ok) if ok is not None else ""))
    mem = result.get("memory") or {}
    if mem.get("rss_per_call_bytes") is not None:
        per_call = mem["rss_per_call_bytes"]
        rows.append((f"memory per live call (RSS growth / calls at {mem['live_calls']:,}, "
                     "fresh process)", f"{_f(per_call / 1000, 1)} KB",
                     "< 20 KB", _goal(per_call < 20_000)))
    elif mem.get("error"):
        rows.append(("memory per live call", mem["error"], "", ""))
    tp = ip.get("throughput") or {}
    lib = (result.get("library") or {}).get("throughput") or {}
    if tp:
        cpu_rate = best_cpu_rate(tp["steps"])
        rows.append(("key presses/s sustained, one daemon process (bridged calls, match + "
                     f"one REST action, wire p99 <= {tp['p99_limit_ms']:.0f} ms)",
                     f"{_f(tp['sustained_per_s'], 0)}/s; {_f(cpu_rate, 0)} per CPU-second",
                     ">= 20,000/s per core",
                     _goal(cpu_rate >= GOALS["presses_per_core"])))
    if tp and lib:
        lib_cpu = best_cpu_rate(lib["steps"])
        ratio = best_cpu_rate(tp["steps"]) / lib_cpu if lib_cpu else float("nan")
        ratio_rate = (tp["sustained_per_s"] / lib["sustained_per_s"]
                      if lib.get("sustained_per_s") else float("nan"))
        rows.append(("same workload, minimal aioari app",
                     f"{_f(lib['sustained_per_s'], 0)}/s; {_f(lib_cpu, 0)} per CPU-second",
                     "", ""))
        rows.append(("daemon / aioari app",
                     f"{_f(ratio_rate, 2)}x sustained rate, {_f(ratio, 2)}x per CPU-second",
                     ">= 10x", _goal(ratio >= GOALS["ratio_vs_library"])))
    elif (result.get("library") or {}).get("error"):
        rows.append(("minimal aioari app", result["library"]["error"], "", ""))
    floor = (result.get("floor") or {}).get("throughput") or {}
    if floor:
        floor_cpu = best_cpu_rate(floor["steps"])
        vs_lib = ""
        if lib:
            lib_cpu = best_cpu_rate(lib["steps"])
            vs_lib = f" (floor / aioari app: {_f(floor_cpu / lib_cpu if lib_cpu else None)}x)"
        rows.append(("same workload, floor (raw asyncio, no log, no flows)",
                     f"{_f(floor['sustained_per_s'], 0)}/s; {_f(floor_cpu, 0)} per "
                     f"CPU-second{vs_lib}", "", ""))
        if tp:
            ratio = best_cpu_rate(tp["steps"]) / floor_cpu if floor_cpu else float("nan")
            ratio_rate = (tp["sustained_per_s"] / floor["sustained_per_s"]
                          if floor.get("sustained_per_s") else float("nan"))
            rows.append(("daemon / floor",
                         f"{_f(ratio_rate, 2)}x sustained rate, {_f(ratio, 2)}x per "
                         "CPU-second", "", ""))
    elif (result.get("floor") or {}).get("error"):
        rows.append(("floor app", result["floor"]["error"], "", ""))
    e2e = result.get("e2e") or {}
    variants = e2e.get("variants") or {}
    for name, v in variants.items():
        rows.append((f"end to end on Asterisk {e2e.get('asterisk_version', '')[:7]}, DTMFEnd "
                     f"-> Hangup (AMI timestamps), {name}",
                     f"p50 {_f(v['p50_ms'])} / p99 {_f(v['p99_ms'])} ms ({v['n']} calls"
                     f"{', ' + str(v['failed']) + ' failed' if v['failed'] else ''})", "", ""))
    for name, v in variants.items():
        if "request_p50_ms" in v:
            rows.append((f"  of which DTMFEnd -> the hangup request at Asterisk (AMI "
                         f"SoftHangupRequest), {name}",
                         f"p50 {_f(v['request_p50_ms'])} / p99 {_f(v['request_p99_ms'])} ms",
                         "", ""))
    own = e2e.get("daemon_dtmf_to_request")
    if own:
        rows.append(("  of which inside the daemon: ChannelDtmfReceived read -> hangup request "
                     "sent (its /metrics histogram: bucket bounds)",
                     f"p50 <= {_f(own['p50_le_ms'], 2)} / p99 <= {_f(own['p99_le_ms'], 2)} ms",
                     "", ""))
    if "daemon" in variants and "minimal ARI app" in variants:
        d, m = variants["daemon"], variants["minimal ARI app"]
        r50, r99 = d["p50_ms"] / m["p50_ms"], d["p99_ms"] / m["p99_ms"]
        # With their 95 % bootstrap intervals: a ratio of two percentiles of a few hundred
        # calls moves by +-0.1 from one run to the next on a 2-core machine.
        lo50, hi50 = e2e_interval(d, m, 50)
        lo99, hi99 = e2e_interval(d, m, 99)
        rows.append(("daemon / minimal ARI app, end to end (95 % bootstrap interval)",
                     f"p50 {_f(r50)}x ({_f(lo50)}-{_f(hi50)}), "
                     f"p99 {_f(r99)}x ({_f(lo99)}-{_f(hi99)})", "<= 1.1x",
                     _goal(r50 <= GOALS["e2e_ratio"] and r99 <= GOALS["e2e_ratio"])))
    elif e2e.get("error"):
        rows.append(("end to end on Asterisk", e2e["error"], "", ""))
    rfc = result.get("e2e_rfc4733") or {}
    for name, v in (rfc.get("variants") or {}).items():
        rows.append((f"end to end, RFC 4733 digit from SIPp, DTMFEnd -> Hangup, {name}",
                     f"p50 {_f(v['p50_ms'])} / p99 {_f(v['p99_ms'])} ms ({v['n']} calls"
                     f"{', ' + str(v['failed']) + ' failed' if v['failed'] else ''})", "", ""))
    if rfc.get("error"):
        rows.append(("end to end, RFC 4733 digits", rfc["error"], "", ""))
    if ip.get("error"):
        rows.append(("in-process benchmarks", ip["error"], "", ""))
    sip = result.get("sip") or {}
    for step in sip.get("steps", []):
        failed = f", {step['calls_failed']} failed" if step.get("calls_failed") else ""
        rows.append((f"SIP load, {step['concurrent']} concurrent calls (SIPp, RFC 4733)",
                     f"{_f(step['calls_completed'])}/{step['calls']} calls{failed}, "
                     f"{_f(step['calls_per_s'], 1)} calls/s; presses sent "
                     f"{_f(step['presses_sent'])} / logged {step['presses_logged']}; CPU daemon "
                     f"{_f(step['cpu_daemon_pct'], 0)} % vs Asterisk "
                     f"{_f(step['cpu_asterisk_pct'], 0)} %",
                     "sent = logged",
                     _goal(None if step["presses_sent"] is None
                           else step["presses_sent"] == step["presses_logged"])))
    reserve = result.get("buyer_reserve") or {}
    for key, what in (("sequential", "reserve + release, one at a time"),
                      ("dial_path", "what a limited buyer's dial waits for (reserve)"),
                      ("contended", "reserve + release, 16 tasks on one buyer, 2 pools")):
        if key in reserve:
            v = reserve[key]
            rows.append((f"buyer limit across daemons: {what}",
                         f"p50 {_f(v['p50_ms'], 3)} / p99 {_f(v['p99_ms'], 3)} ms ({v['n']})",
                         "", ""))
    if reserve.get("error"):
        rows.append(("buyer limit across daemons", reserve["error"], "", ""))
    for key in ("error", "steps_failed"):
        if sip.get(key):
            rows.append(("SIP load", sip[key][:300], "", ""))
    lines = ["| figure | measured | goal | |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    m = result["machine"]
    lines.append("")
    lines.append(f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux "
                 f"{m['kernel']}, Python {m['python']} "
                 f"(event loop: {result.get('settings', {}).get('event_loop', 'asyncio')}); "
                 + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
                 + f"; commit {m['commit']}. Command: `{result['command']}` "
                 f"({result['started_at']}, {result['seconds']:.0f} s).")
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    log = print
    result: dict[str, Any] = {
        "command": "bench/.venv/bin/python -m bench.run " + shlex.join(sys.argv[1:]),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {},
    }
    started = time.monotonic()
    s = result["settings"] = {
        "latency_calls": [1, 10] if quick else [1, 100, 1000, 10_000],
        "presses": 100 if quick else 2000,
        "press_rate": 200.0,
        "bridged_calls": 100 if quick else 5000,
        "rates": [200.0, 400.0] if quick else [500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0,
                                               4000.0, 5000.0, 6000.0, 8000.0, 10000.0,
                                               12000.0, 14000.0, 16000.0, 20000.0],
        "step_seconds": 1.0 if quick else 3.0,
        "event_loop": procs.EVENT_LOOP,
        "p99_limit_ms": 10.0,
    }
    log("== memory per live call (fresh process)")
    try:
        result["memory"] = await asyncio.to_thread(
            inprocess.measure_memory_in_fresh_process, 100 if quick else 10_000)
        log(f"  {result['memory']['live_calls']:,} live calls: "
            f"{result['memory']['rss_per_call_bytes'] / 1000:.1f} KB per call")
    except Exception as exc:
        result["memory"] = {"error": f"{type(exc).__name__}: {exc}"}
    log("== in process: latency vs live calls, throughput (fake ARI)")
    try:
        result["inprocess"] = await inprocess.run_inprocess(
            latency_calls=s["latency_calls"], presses=s["presses"],
            press_rate=s["press_rate"], bridged_calls=s["bridged_calls"], rates=s["rates"],
            step_seconds=s["step_seconds"], p99_limit_ms=s["p99_limit_ms"], log=log)
    except Exception as exc:  # reported in the table; the smoke test is what fails
        result["inprocess"] = {"error": f"{type(exc).__name__}: {exc}"}
    apps = [("library", "a minimal aioari app", run_library, args.skip_library),
            ("floor", "the floor app (raw asyncio, no log, no flows)", run_floor,
             args.skip_floor)]
    for key, what, run_it, skip in apps:
        if skip:
            continue
        log(f"== the same throughput ramp through {what}")
        try:
            result[key] = await run_it(
                bridged_calls=s["bridged_calls"], rates=s["rates"],
                step_seconds=s["step_seconds"], p99_limit_ms=s["p99_limit_ms"], log=log)
        except Exception as exc:  # a benchmark reports, it does not fail
            result[key] = {"error": f"{type(exc).__name__}: {exc}"}
    if not args.skip_e2e:
        from bench.e2e import run_e2e
        from bench.e2e_rfc4733 import run_e2e_rfc4733
        from bench.scale_out import run_scale_out

        for key, title, run_step, (few, many), at_once in (
                ("e2e", "end to end on Asterisk (AMI timestamps)", run_e2e, (20, 1000), 4),
                ("e2e_rfc4733", "end to end with RFC 4733 digits from SIPp, every call mode "
                 "(AMI timestamps)", run_e2e_rfc4733, (10, 200), 4),
                ("scale_out", "two daemons against one (StasisBroadcast, calls/s)",
                 run_scale_out, (20, 200), 32)):
            log(f"== {title}")
            try:
                result[key] = await run_step(
                    calls=few if quick else many, concurrency=at_once, admin_dsn=os.environ.get(
                        "KEYPRESS_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
                    log=log)
            except Exception as exc:
                result[key] = {"error": f"{type(exc).__name__}: {exc}"}
    if not args.skip_buyer_reserve:
        log("== buyer reservation across daemons (reserve + release on local PostgreSQL)")
        try:
            from bench.buyer_reserve import run_buyer_reserve

            result["buyer_reserve"] = await run_buyer_reserve(
                admin_dsn=os.environ.get("KEYPRESS_TEST_DSN",
                                         "postgresql://postgres@127.0.0.1:5432/postgres"),
                samples=200 if quick else 2000, log=log)
        except Exception as exc:
            result["buyer_reserve"] = {"error": f"{type(exc).__name__}: {exc}"}
    if not args.skip_sip:
        log("== SIP load (SIPp callers and buyers through the router prompt)")
        try:
            from bench.sip_load import run_sip_load

            result["sip"] = await run_sip_load(
                concurrency=[10] if quick else [50, 100, 200],
                admin_dsn=os.environ.get("KEYPRESS_TEST_DSN",
                                         "postgresql://postgres@127.0.0.1:5432/postgres"),
                log=log)
        except Exception as exc:
            result["sip"] = {"error": f"{type(exc).__name__}: {exc}"}
    result["seconds"] = time.monotonic() - started
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="keypress-ari benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--skip-library", action="store_true")
    parser.add_argument("--skip-floor", action="store_true")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--skip-sip", action="store_true")
    parser.add_argument("--skip-buyer-reserve", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default=procs.EVENT_LOOP,
                        help="the event loop of the daemon and of the apps it is compared with")
    args = parser.parse_args()
    from keypress_ari.cli import loop_factory
    from keypress_ari.logs import configure_logging

    configure_logging("warning")
    procs.EVENT_LOOP = args.loop
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        result = runner.run(main_async(args))
    args.out.mkdir(parents=True, exist_ok=True)
    text = table(result)
    (args.out / "raw").mkdir(exist_ok=True)
    (args.out / "raw" / "bench.json").write_text(json.dumps(result, indent=1, default=str)
                                                  + "\n")
    (args.out / "summary.json").write_text(json.dumps(headline(result), indent=1,
                                                      default=str) + "\n")
    (args.out / "table.md").write_text(text + "\n")
    try:
        from bench.plots import draw_all

        for path in draw_all(result, args.out):
            print(f"plot: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    except ImportError as exc:
        print(f"no plots: {exc} (matplotlib is in bench/requirements.txt)")
    print()
    print(text)


if __name__ == "__main__":
    main()
