"""Profile the key press hot path (cProfile) under a steady load of live-call presses.

    bench/.venv/bin/python -m bench.profile_hot [--rate 1500] [--seconds 4] [--out F.pstats]

Bridged calls against the fake ARI (see ``bench/inprocess.py``); only the press phase is
profiled (not the call set-up). Prints the top functions by own time and by cumulative
time, and writes the raw stats to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
from pathlib import Path

from bench.inprocess import start_daemon
from bench.procs import fake_ari, pin_cpu
from keypress_ari.calls.state import Stage


async def profile(rate: float, seconds: float, calls: int, out: Path | None) -> str:
    pin_cpu(0)
    async with fake_ari(cpu=1) as fake:
        daemon = await start_daemon(fake.base_url, log_level="warning")
        try:
            await fake.control("open", calls=calls, kind="bridged")
            await fake.wait_ready(calls)
            await daemon.wait_stage(Stage.BRIDGED, calls)
            profiler = cProfile.Profile()
            profiler.enable()
            result = await fake.control("press", rate=rate, count=int(rate * seconds),
                                        kind="bridged", timeout=seconds * 3 + 10)
            profiler.disable()
        finally:
            await daemon.stop()
    if out is not None:
        profiler.dump_stats(str(out))
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    text.write(f"presses sent {result['sent']}, answered {result['answered']}\n")
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)
    return text.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description="profile the key press hot path")
    parser.add_argument("--rate", type=float, default=1500)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    print(asyncio.run(profile(args.rate, args.seconds, args.calls, args.out)))


if __name__ == "__main__":
    main()
