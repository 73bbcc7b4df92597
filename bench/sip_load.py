"""SIP load: SIPp callers through the router prompt to SIPp buyers that press keys.

One Asterisk (``asterisk/etc``, free test ports), the daemon (``Daemon`` with a fresh
PostgreSQL database) in this process, and two SIPp processes per step (the harness of
``tests/support/sipp.py``, its scenarios, ``-m/-l/-r`` for many calls):

* callers (127.0.0.1, ``uac_dtmf.xml``) dial 18005550100 and press 1 (RFC 4733) 800 ms
  after the answer (router prompt ``sound:beep``, key 1 = continue routing);
* the buyer (``PJSIP/acme``, 127.0.0.2, ``uas_answer_dtmf.xml``) answers and presses 3
  (``mute_consumer``) then 9 (disposition ``sale``: the daemon hangs both legs up).

Per step (concurrent calls 50, 100, 200): calls/s completed, presses sent (3 per call
that SIPp completed) vs ``key_press`` rows in the call log (PostgreSQL), and the CPU used
by the daemon (this process) and by Asterisk during the step.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench.procs import cpu_seconds

SIP_CATALOG = """
flow_groups:
  - name: press-one
    flows:
      - {key: "1", continue_routing: true}
  - name: agent
    flows:
      - {key: "3", name: mute, call_control_actions: [mute_consumer]}
      - {key: "9", name: sale, disposition: sale}
routers:
  - {name: main, prompt: "sound:beep", press_1_timeout: 20, flow_group: press-one,
     buyers: [acme]}
buyers:
  - {name: acme, endpoint: PJSIP/acme, ring_timeout: 20, forwards_to_external_agent: true,
     flow_group: agent}
numbers:
  - {number: "18005550100", router: main}
"""
CALLER_DIGITS = "1"
BUYER_DIGITS = "39"
CALL_SECONDS = 3.0  # roughly: answer, prompt, 1, dial, answer, 3, 9, hangup


async def _count_presses(pool: Any) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM call_events WHERE kind = "
                                       "'key_press'"))


async def _call_outcomes(pool: Any, since: datetime) -> dict[str, Any]:
    """The step's calls by stage and disposition, and the last events of a few calls that
    did not end with the buyer's sale (to tell where a call stopped)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT stage, coalesce(disposition, '-') AS disposition, count(*) AS n "
            "FROM calls WHERE started_at >= $1 GROUP BY 1, 2 ORDER BY 3 DESC", since)
        odd = await conn.fetch(
            "SELECT c.id, c.stage, (SELECT array_agg(kind ORDER BY seq DESC) FROM "
            "(SELECT kind, seq FROM call_events e WHERE e.call_id = c.id "
            "ORDER BY seq DESC LIMIT 4) AS last) AS last_kinds "
            "FROM calls c WHERE c.started_at >= $1 AND c.disposition IS DISTINCT FROM 'sale' "
            "LIMIT 5", since)
    return {
        "by_stage": [f"{r['stage']}/{r['disposition']}: {r['n']}" for r in rows],
        "not_sale": [f"{r['stage']}: {list(r['last_kinds'] or [])}" for r in odd],
    }


async def run_step(asterisk: Any, daemon: Any, concurrent: int,
                   log: Callable[[str], None]) -> dict[str, Any]:
    from tests.support.sipp import sipp_buyer, sipp_caller

    calls = concurrent * 3
    rate = max(1.0, concurrent / CALL_SECONDS)
    budget = calls / rate + 120
    before = await _count_presses(daemon.pool)
    since = datetime.now(UTC)
    ast_cpu0, own_cpu0, t0 = cpu_seconds(asterisk.pid), cpu_seconds(), time.monotonic()
    buyer = sipp_buyer(asterisk, "127.0.0.2", "answer_dtmf", BUYER_DIGITS, delay_ms=500,
                       timeout=budget)
    buyer.extra_args += ["-m", str(calls)]
    caller = sipp_caller(asterisk, "18005550100", CALLER_DIGITS, delay_ms=800, timeout=budget)
    caller.extra_args += ["-m", str(calls), "-l", str(concurrent), "-r", f"{rate:.2f}",
                          "-rp", "1000"]
    async with buyer, caller:
        caller_rc = await caller.wait(budget + 10)
        buyer_rc = await buyer.wait(30)
        screen = caller.screen()  # before the agents' folders are removed
    seconds = time.monotonic() - t0
    ast_cpu, own_cpu = cpu_seconds(asterisk.pid) - ast_cpu0, cpu_seconds() - own_cpu0
    assert daemon.calllog is not None
    await daemon.calllog.flush(30)
    await asyncio.sleep(1.0)  # the last calls' rows (ended by the BYE exchange)
    await daemon.calllog.flush(30)
    logged = await _count_presses(daemon.pool) - before
    completed = _screen_count(screen, "Successful call", calls if caller_rc == 0 else None)
    failed = _screen_count(screen, "Failed call", None)
    row = {
        "concurrent": concurrent, "calls": calls, "rate_offered": rate,
        "calls_completed": completed, "calls_failed": failed, "seconds": seconds,
        "calls_per_s": completed / seconds if seconds else float("nan"),
        "presses_sent": completed * (len(CALLER_DIGITS) + len(BUYER_DIGITS)),
        "presses_logged": logged,
        "cpu_daemon_pct": own_cpu / seconds * 100, "cpu_asterisk_pct": ast_cpu / seconds * 100,
        "sipp_exit": {"caller": caller_rc, "buyer": buyer_rc},
        "call_log": await _call_outcomes(daemon.pool, since),
    }
    if not screen:  # SIPp left no final screen (killed by its global timeout): unknown
        row["calls_completed"] = row["presses_sent"] = None
        row["calls_per_s"] = float("nan")
    log(f"  {concurrent:>4} concurrent: {row['calls_completed']}/{calls} calls, "
        f"{row['calls_per_s']:.1f} calls/s, presses {row['presses_sent']} sent / {logged} "
        f"logged, CPU daemon {row['cpu_daemon_pct']:.0f} % Asterisk "
        f"{row['cpu_asterisk_pct']:.0f} %")
    return row


def _screen_count(screen: str, label: str, default: int | None) -> int:
    """A counter of SIPp's final screen ('Successful call', 'Failed call'), cumulative."""
    for line in screen.splitlines():
        if line.strip().startswith(label):
            parts = [p for p in line.replace("|", " ").split() if p.isdigit()]
            if parts:
                return int(parts[-1])
    return default or 0


async def run_sip_load(*, concurrency: list[int], admin_dsn: str,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    from bench.e2e import _fresh_database
    from keypress_ari.config import AriSettings, DatabaseSettings, Settings
    from keypress_ari.daemon import Daemon
    from keypress_ari.flows.yamlio import load_catalog_yaml
    from keypress_ari.store.catalog import import_catalog
    from tests.support.asterisk import AsteriskServer
    from tests.support.sipp import sipp_binary

    sipp_binary()  # raises when SIPp is missing
    asterisk = AsteriskServer.on_free_ports()
    await asterisk.start()
    dsn, drop = await _fresh_database(admin_dsn)
    out: dict[str, Any] = {"steps": []}
    try:
        daemon = Daemon(Settings(
            ari=AriSettings(url=asterisk.base_url, user=asterisk.ari_user,
                            password=asterisk.ari_password, app="keypress"),
            database=DatabaseSettings(dsn=dsn)))
        await daemon.start()
        try:
            async with daemon.pool.acquire() as conn:
                await import_catalog(conn, load_catalog_yaml(SIP_CATALOG, "bench-sip.yaml"))
            await daemon.reload_catalog()
            assert daemon.stream is not None
            await daemon.stream.wait_connected(10)
            for concurrent in concurrency:
                try:
                    out["steps"].append(await run_step(asterisk, daemon, concurrent, log))
                except Exception as exc:
                    out["steps_failed"] = f"{concurrent}: {type(exc).__name__}: {exc}"[:2000]
                    break
                await asterisk.cleanup_channels(15)
        finally:
            await daemon.stop()
    finally:
        await asterisk.stop()
        await drop()
    return out
