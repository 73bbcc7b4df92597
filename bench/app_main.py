"""The command line shared by the standalone apps the daemon is compared with
(``library_app.py``, ``floor_app.py``): where the fake ARI is, which CPU, which event loop."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

AppRun = Callable[[str, str, str, float], Coroutine[Any, Any, Any]]


def app_main(description: str, run: AppRun) -> None:
    """Parse the arguments, pin the CPU, and run ``run(url, user, password, max_seconds)``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT/ (no /ari)")
    parser.add_argument("--user", default="keypress")
    parser.add_argument("--password", default="keypress-secret")
    parser.add_argument("--cpu", type=int)
    parser.add_argument("--max-seconds", type=float, default=1800)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="asyncio",
                        help="the event loop (bench/run.py gives every app the daemon's)")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(run(args.url, args.user, args.password, args.max_seconds))
