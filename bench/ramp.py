"""The daemon's throughput ramp alone (the figure ``run.py`` reports, without the rest).

    bench/.venv/bin/python -m bench.ramp [--rates 1000,2000,4000] [--calls 2000]
                                         [--seconds 3] [--loop uvloop|asyncio]

Bridged calls against the fake ARI (``inprocess.py``), this process on CPU 0 and the fake on
CPU 1; each step prints the presses handled, the wire p99 and the presses per CPU-second of
this process. No latency limit: the ramp goes on until presses are lost or the offered rate
is not kept. For before/after comparisons of a change on the key press path
(``bench/profile-history.md``).
"""

from __future__ import annotations

import argparse
import asyncio

from bench import inprocess, procs
from keypress_ari.cli import loop_factory


def main() -> None:
    parser = argparse.ArgumentParser(description="the daemon's throughput ramp")
    parser.add_argument("--rates", default="1000,2000,3000,4000,5000,6000,8000",
                        help="presses per second offered, one step each")
    parser.add_argument("--calls", type=int, default=2000, help="bridged calls")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per step")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default=procs.EVENT_LOOP)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    from keypress_ari.logs import configure_logging

    configure_logging("warning")
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        runner.run(inprocess.run_inprocess(
            latency_calls=[], presses=0, press_rate=1.0, bridged_calls=args.calls,
            rates=rates, step_seconds=args.seconds, p99_limit_ms=float("inf")))


if __name__ == "__main__":
    main()
