"""What a limited buyer's dial costs in latency from the reservation across daemons.

    bench/.venv/bin/python -m bench.buyer_reserve [--samples 2000]

Against a fresh, migrated database on the local PostgreSQL (``$KEYPRESS_TEST_DSN`` or
postgres@127.0.0.1:5432), with two connection pools standing for two daemons:

- ``sequential``: one reservation then its release at a time (``reserve_buyer_leg()`` and a
  ``DELETE``: two round trips), p50/p99 of the pair;
- ``dial_path``: what the dial path waits for: ``BuyerLimits.reserve`` (one round trip); the
  release goes in the background and is not timed (a dial of the same buyer on the same
  daemon while a release of it is still under way waits for that release too);
- ``contended``: 8 tasks per daemon reserving and releasing the same buyer at once (the
  buyer's advisory lock makes them take turns), p50/p99 of one reserve+release.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from bench.e2e import _fresh_database
from bench.procs import summarize
from keypress_ari.calls.buyer_limits import BuyerLimits
from keypress_ari.flows.model import Buyer
from keypress_ari.store.buyer_legs import PgBuyerLegs

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


async def _round_trips(legs: PgBuyerLegs, buyer: str, prefix: str, n: int) -> list[float]:
    took: list[float] = []
    for i in range(n):
        leg = f"{prefix}-{i}"
        t0 = time.perf_counter()
        await legs.reserve(buyer, leg, 1_000_000)
        await legs.release(leg)
        took.append(time.perf_counter() - t0)
    return took


async def measure(dsn: str, samples: int) -> dict[str, Any]:
    pools = [await asyncpg.create_pool(dsn, min_size=8, max_size=8) for _ in range(2)]
    try:
        a, b = (PgBuyerLegs(pool, f"bench-{i}", 30.0) for i, pool in enumerate(pools))
        await _round_trips(a, "warm-up", "w", min(200, samples))
        sequential = await _round_trips(a, "seq", "s", samples)
        limits = BuyerLimits(a)
        buyer = Buyer(name="dial", endpoint="PJSIP/dial", max_concurrency=1_000_000)
        dial: list[float] = []
        for i in range(samples):
            t0 = time.perf_counter()
            grant = await limits.reserve(buyer, f"d-{i}")
            dial.append(time.perf_counter() - t0)
            assert grant.granted and grant.counted, grant
            limits.release(f"d-{i}")
            await limits.settle(10.0)  # untimed: the next dial does not wait for it
        per_task = max(1, samples // 16)
        batches = await asyncio.gather(*(
            _round_trips(legs, "hot", f"c{t}", per_task)
            for t, legs in enumerate([a, b] * 8)))
        contended = [x for batch in batches for x in batch]
        return {"sequential": summarize(sequential), "dial_path": summarize(dial),
                "contended": summarize(contended), "fallbacks": limits.fallbacks}
    finally:
        for pool in pools:
            await pool.close()


async def run_buyer_reserve(*, admin_dsn: str, samples: int = 2000,
                            log: Callable[[str], None] = print) -> dict[str, Any]:
    dsn, drop = await _fresh_database(admin_dsn)
    try:
        result = await measure(dsn, samples)
    finally:
        await drop()
    for key in ("sequential", "dial_path", "contended"):
        s = result[key]
        log(f"  {key}: p50 {s['p50_ms']:.3f} / p99 {s['p99_ms']:.3f} ms ({s['n']} samples)")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    args = parser.parse_args()
    admin = os.environ.get("KEYPRESS_TEST_DSN", DEFAULT_ADMIN_DSN)
    result = asyncio.run(run_buyer_reserve(admin_dsn=admin, samples=args.samples))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
