"""End to end with real RFC 4733 digits: one key press -> hangup, in every call mode.

The same job as ``bench/e2e.py`` (answer, wait for one digit, hang up), but each call is a
SIPp caller (``tests/support/sipp.py``, ``uac_dtmf.xml``) on the ``caller`` endpoint: PCMU
and telephone-event RTP from 127.0.0.1, the digit 2 sent as RFC 4733 events 800 ms after the
answer, as a phone sends it. No AMI ``PlayDTMF`` (whose END-only digit delays features by
~100 ms and biases the dialplan row). Five variants, interleaved in one run on one Asterisk:

* ``stasis``: the daemon's Stasis mode, 18005550300 (prompt router, key 2 = disposition);
* ``minimal ARI app``: ``minimal@keypress-bench`` (answer, hang up on the first digit);
* ``dialplan Read()``: ``native@keypress-bench`` (``Answer() / Read(,,1) / Hangup()``);
* ``fastagi``: ``fastagi@keypress-bench``: ``Dial()`` to a buyer that answers, key 2 in
  ``DYNAMIC_FEATURES``; the daemon's FastAGI server hangs both legs up;
* ``ami``: ``ami@keypress-bench``: the same ``Dial()`` with nothing for keypress-ari in
  it; the daemon sees the ``DTMFEnd`` over AMI and hangs both legs up with AMI ``Hangup``.

Latency: the AMI ``Hangup`` event's ``Timestamp`` minus the ``DTMFEnd`` (``Direction:
Received``) event's, both for the caller's PJSIP channel (found by its unique caller number).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bench.ami import AmiClient
from bench.e2e import WARM_UP, VariantResult, bench_setup, summarize_variant

VARIANTS = {
    "stasis": "18005550300",
    "minimal ARI app": "18005550391",
    "dialplan Read()": "18005550390",
    "fastagi": "18005550392",
    "ami": "18005550393",
}
DELAY_MS = 800  # from the answer to the digit: every variant waits for it by then


async def one_call(asterisk: Any, ami: AmiClient, number: str, caller_number: str) -> float:
    """One SIPp call pressing 2 (RFC 4733); DTMFEnd -> Hangup of its channel, in ms."""
    from tests.support.sipp import sipp_caller

    agent = sipp_caller(asterisk, number, "2", delay_ms=DELAY_MS, caller_number=caller_number,
                        timeout=20)
    async with agent:
        seen = await ami.wait_event(
            lambda e: e.get("CallerIDNum") == caller_number
            and e.get("Channel", "").startswith("PJSIP/caller-"), 10)
        name = seen["Channel"]
        dtmf = await ami.wait_event(
            lambda e: e.get("Event") == "DTMFEnd" and e.get("Channel") == name
            and e.get("Direction") == "Received", 15)
        hangup = await ami.wait_event(
            lambda e: e.get("Event") == "Hangup" and e.get("Channel") == name, 15)
        await agent.wait(10)
    return (float(hangup["Timestamp"]) - float(dtmf["Timestamp"])) * 1000


async def run_interleaved(asterisk: Any, ami: AmiClient, calls: int,
                          concurrency: int) -> dict[str, VariantResult]:
    results = {name: VariantResult() for name in VARIANTS}
    gate = asyncio.Semaphore(concurrency)

    async def task(name: str, index: int, serial: int) -> None:
        async with gate:
            try:
                ms = await asyncio.wait_for(
                    one_call(asterisk, ami, VARIANTS[name], f"555{serial:07d}"), 40)
            except Exception as exc:
                results[name].failures.append(f"{type(exc).__name__}: {exc}")
                return
            if index >= WARM_UP:
                results[name].samples_ms.append(ms)

    jobs = [(name, i) for i in range(calls + WARM_UP) for name in VARIANTS]
    await asyncio.gather(*(task(name, i, n) for n, (name, i) in enumerate(jobs)))
    return results


async def run_e2e_rfc4733(*, calls: int = 30, concurrency: int = 4, admin_dsn: str,
                          log: Callable[[str], None] = print) -> dict[str, Any]:
    async with bench_setup(admin_dsn, "kp-bench-rfc4733-", {
            "KEYPRESS_AMI__ENABLED": "true"}) as (bench, _):
        results = await run_interleaved(bench.asterisk, bench.ami, calls, concurrency)
        for name, result in results.items():
            bench.out["variants"][name] = summarize_variant(name, result, log)
    bench.out.update(digits="RFC 4733 from SIPp", calls_per_variant=calls,
                     concurrency=concurrency)
    return bench.out


if __name__ == "__main__":
    import os

    from keypress_ari.logs import configure_logging

    configure_logging("warning")
    done = asyncio.run(run_e2e_rfc4733(
        calls=int(os.environ.get("CALLS", "10")),
        admin_dsn=os.environ.get("KEYPRESS_TEST_DSN",
                                 "postgresql://postgres@127.0.0.1:5432/postgres")))
    for variant, row in done["variants"].items():
        for failure in row["failures"]:
            print(f"  {variant} failed: {failure}")
