"""Two daemons against one on one Asterisk: calls offered by ``StasisBroadcast()``
(``keypress-broadcast``), each answered, pressed (AMI ``PlayDTMF``) and hung up by the
daemon that claimed it, ``concurrency`` at once. Reported per setup: calls per second over
the run (each call is one press), the key press -> hangup latency (Asterisk's timestamps,
as ``bench/e2e.py``) and how the calls spread over the daemons (their claim counts).

On one small machine both daemons share its cores with Asterisk: this shows what a second
daemon costs and how claims spread, not the capacity of a second server.

    bench/.venv/bin/python -m bench.scale_out --calls 60 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.e2e import (
    AppProcess,
    VariantResult,
    bench_setup,
    one_call,
    start_daemon_process,
    summarize_variant,
)

NUMBER, CONTEXT = "18005550300", "keypress-broadcast"


async def claims(app: AppProcess) -> dict[str, int]:
    headers = {"Authorization": f"Bearer {app.admin_token}"}
    async with aiohttp.ClientSession() as http, http.get(f"{app.admin_url}/readyz",
                                                         headers=headers) as resp:
        body = await resp.json()
    return dict(body.get("claims", {}))


async def load(caller: Any, ami: Any, calls: int, concurrency: int) -> tuple[VariantResult,
                                                                              float]:
    result, gate = VariantResult(), asyncio.Semaphore(concurrency)

    async def task() -> None:
        async with gate:
            try:
                ms, _ = await asyncio.wait_for(one_call(caller, ami, NUMBER, CONTEXT), 30)
            except Exception as exc:
                result.failures.append(f"{type(exc).__name__}: {exc}")
                return
            result.samples_ms.append(ms)

    started = time.monotonic()
    await asyncio.gather(*(task() for _ in range(calls)))
    return result, time.monotonic() - started


async def run_scale_out(*, calls: int = 60, concurrency: int = 8, admin_dsn: str,
                        log: Any = print) -> dict[str, Any]:
    from tests.support.caller import TestCaller

    out: dict[str, Any] = {"calls": calls, "concurrency": concurrency, "setups": {}}
    first_env = {"KEYPRESS_ARI__APP": "keypress-a"}
    async with bench_setup(admin_dsn, "kp-bench-scale-", first_env) as (bench, first):
        asterisk = bench.asterisk
        caller = TestCaller(asterisk.base_url, asterisk.ari_user, asterisk.ari_password,
                            app="kp-bench-drv")
        await caller.start()
        second: AppProcess | None = None
        try:
            with tempfile.TemporaryDirectory(prefix="kp-bench-scale-b-") as workdir:
                for setup in ("one daemon", "two daemons"):
                    if setup == "two daemons":
                        second = await start_daemon_process(
                            asterisk, bench.info, bench.dsn, Path(workdir),
                            {"KEYPRESS_ARI__APP": "keypress-b",  # the first has the AGI port
                             "KEYPRESS_AGI__ENABLED": "false"})
                    apps = [first] + ([second] if second else [])
                    before = [(await claims(a)).get("won", 0) for a in apps]
                    result, seconds = await load(caller, bench.ami, calls, concurrency)
                    won = [(await claims(a)).get("won", 0) - b
                           for a, b in zip(apps, before, strict=True)]
                    row = summarize_variant(setup, result, log)
                    row.pop("samples_ms", None)
                    row.update(seconds=round(seconds, 2),
                               calls_per_s=round(len(result.samples_ms) / seconds, 2),
                               claims_won=won)
                    log(f"  {setup:>16}: {row['calls_per_s']} calls/s (= presses/s), "
                        f"claims {won}")
                    out["setups"][setup] = row
                    await asterisk.cleanup_channels()
                if second is not None:
                    await second.stop()
        finally:
            await caller.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=60)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--dsn", default=os.environ.get(
        "KEYPRESS_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    result = asyncio.run(run_scale_out(calls=args.calls, concurrency=args.concurrency,
                                       admin_dsn=args.dsn))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
