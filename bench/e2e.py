"""End to end on a real Asterisk: key press -> hangup, timed by Asterisk's own clock.

Three variants of the same job (answer, wait for one digit, hang up), their calls
interleaved (round robin, a few at once) in one run on one Asterisk (started from
``asterisk/etc`` on free test ports):

* ``daemon``: the keypress-ari daemon (``Daemon``, with a fresh PostgreSQL database when
  one answers at ``KEYPRESS_TEST_DSN``), number 18005550300 in ``keypress-inbound``: router
  without a prompt, press 2 = disposition, so the call is hung up;
* ``minimal ARI app``: a single-purpose Stasis app on the project's thin ARI client
  (answer on StasisStart, hang up on the first ChannelDtmfReceived), ``minimal@keypress-bench``;
* ``dialplan``: ``Answer() / Read(,,1) / Hangup()``, ``native@keypress-bench``;
* ``fastagi``: the daemon's fastagi mode: ``fastagi@keypress-bench`` Dial()s a buyer that
  answers, with the caller's key 2 in ``DYNAMIC_FEATURES``; the applicationmap runs the
  daemon's FastAGI server, whose flow (disposition) hangs both legs up over AGI. Its digit
  is sent by ARI from the ``;1`` half (BEGIN and END, as a phone's): an END-only digit
  (AMI ``PlayDTMF``) makes a feature fire ~100 ms late (ASTERISK-NOTES.md), which would
  measure the injection, not the daemon.

Each call is a Local channel originated into the bench's own app (the ``;1`` half, as the
tests' caller does); once the ``;2`` half is answered the digit is injected on ``;2`` with
AMI ``PlayDTMF`` (``Receive: true``: the channel receives it as from its peer). Latency is
the AMI ``Hangup`` event's ``Timestamp`` minus the ``DTMFEnd`` event's (``timestampevents
= yes`` in ``manager.conf``), both for the ``;2`` channel. For the two ARI apps the
``SoftHangupRequest`` event splits it: until their hangup request reached Asterisk (the
app's share and the websocket's), and from there to the hangup (Asterisk's share; an app
busy at that moment on a small machine slows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench import procs
from bench.ami import AmiClient
from bench.procs import percentile, stop_process
from keypress_ari.ari.client import AriClient
from keypress_ari.ari.errors import AriError
from keypress_ari.ari.events import ChannelDtmfReceived, Event, StasisStart
from keypress_ari.ari.stream import EventStream
from tests.support.process import daemon_env, free_port, spawn_daemon, until

MINIMAL_APP = "kp-bench-min"  # its Stasis app (asterisk/etc/extensions.conf, keypress-bench)

E2E_CATALOG = """
flow_groups:
  - name: bench-e2e
    flows:
      - {key: "2", disposition: bench_done}
  - name: bench-agi
    modes: [fastagi]
    flows:
      - {key: "2", disposition: bench_done}
  - name: bench-ami
    modes: [ami]
    flows:
      - {key: "2", disposition: bench_done}
routers:
  - {name: bench-e2e, request_key_press: true, press_1_timeout: 60, flow_group: bench-e2e}
  - {name: bench-agi, request_key_press: false}
numbers:
  - {number: "18005550300", router: bench-e2e}
  - {number: "18005550301", router: bench-agi, keypress_controls: true, flow_group: bench-agi}
  - {number: "18005550302", router: bench-agi, keypress_controls: true, flow_group: bench-ami}
"""

class MinimalAriApp:
    """Answer on StasisStart, hang up on the first digit: nothing else."""

    def __init__(self, base_url: str, user: str, password: str, app: str) -> None:
        self.ari = AriClient(base_url, user, password, app=app)
        self.stream = EventStream(base_url, user, password, apps=app, on_event=self.on_event)
        self._tasks: set[asyncio.Task[None]] = set()
        self._run: asyncio.Task[None] | None = None

    def on_event(self, event: Event) -> None:
        if isinstance(event, StasisStart):
            self._spawn(self.ari.answer(event.channel.id))
        elif isinstance(event, ChannelDtmfReceived):
            self._spawn(self.ari.hangup(event.channel.id))

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def start(self) -> None:
        self._run = asyncio.create_task(self.stream.run())
        await self.stream.wait_connected(10)

    async def stop(self) -> None:
        await self.stream.stop()
        if self._run is not None:
            await asyncio.wait_for(self._run, 5)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ari.close()


@dataclass
class AppProcess:
    """The daemon or the minimal app, each in its own process as in production (sharing the
    bench's event loop would put each app's handling behind the others' callbacks)."""

    proc: asyncio.subprocess.Process
    admin_url: str = ""
    admin_token: str = ""

    async def stop(self) -> None:
        await stop_process(self.proc, 10)


async def start_daemon_process(asterisk: Any, ari: AriClient, dsn: str, workdir: Path,
                               extra_env: dict[str, str] | None = None) -> AppProcess:
    """``keypress-ari run`` as the tests start it (``tests/support/process.py``), with its
    admin API on a free port, logging warnings only, on the bench's event loop."""
    token = uuid.uuid4().hex
    admin_port = free_port()
    env = daemon_env(asterisk, dsn, workdir / "state")
    env.update({"KEYPRESS_AGI__ENABLED": "true", "KEYPRESS_AGI__PORT": str(asterisk.agi_port),
                "KEYPRESS_LOG__LEVEL": "warning", "KEYPRESS_ADMIN__PORT": str(admin_port),
                "KEYPRESS_ADMIN__TOKEN": token, "KEYPRESS_RUNTIME__EVENT_LOOP": procs.EVENT_LOOP})
    env.update({"KEYPRESS_AMI__PORT": str(asterisk.ami_port),  # the ami mode, when enabled
                "KEYPRESS_AMI__USER": asterisk.ami_user,
                "KEYPRESS_AMI__SECRET": asterisk.ami_password})
    env.update(extra_env or {})
    proc = await spawn_daemon(env, workdir / "daemon.log", ari)
    return AppProcess(proc, f"http://127.0.0.1:{admin_port}", token)


async def start_minimal_process(asterisk: Any, ari: AriClient) -> AppProcess:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.e2e", "--minimal-app", asterisk.base_url, asterisk.ari_user,
        asterisk.ari_password, "--loop", procs.EVENT_LOOP, stdin=asyncio.subprocess.DEVNULL,
        cwd=procs.ROOT)
    app = AppProcess(proc)

    async def registered() -> bool:
        if proc.returncode is not None:
            raise RuntimeError(f"the minimal app exited ({proc.returncode})")
        try:
            await ari.get_application(MINIMAL_APP)
        except AriError:
            return False
        return True

    try:
        await until(registered, 30, "the minimal app registered its Stasis app")
    except BaseException:
        await app.stop()
        raise
    return app


async def daemon_dtmf_histogram(app: AppProcess) -> dict[str, Any]:
    """The daemon's own DTMF -> first request latency (``keypress_dtmf_to_ari_seconds``), as
    bucket bounds: p50 and p99 each lie at or under the bound given."""
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(
            f"{app.admin_url}/metrics",
            headers={"Authorization": f"Bearer {app.admin_token}"}) as resp:
        text = await resp.text()
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        if line.startswith("keypress_dtmf_to_ari_seconds_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(bound), float(line.rsplit(" ", 1)[1])))
    total = buckets[-1][1] if buckets else 0.0

    def upper(q: float) -> float:
        return next((b * 1000 for b, count in buckets if count >= q * total), float("nan"))

    return {"n": int(total), "p50_le_ms": upper(0.5), "p99_le_ms": upper(0.99)}


@dataclass
class VariantResult:
    samples_ms: list[float] = field(default_factory=list)
    request_ms: list[float] = field(default_factory=list)  # DTMFEnd -> request at Asterisk
    failures: list[str] = field(default_factory=list)


async def one_call(caller: Any, ami: AmiClient, number: str, context: str,
                   press: str = "ami") -> tuple[float, float | None]:
    """Place a call, press 2 on its ;2 half with AMI; return DTMFEnd -> Hangup in ms, and
    DTMFEnd -> the hangup request reaching Asterisk (the channel's ``SoftHangupRequest``:
    for an ARI app, when its request arrived; for the dialplan, its ``Hangup()``)."""
    call = await caller.place_call(number, context=context, timeout=10)
    if not call.answered:
        raise RuntimeError(f"{number}@{context} was not answered")
    channel = await caller.client.get_channel(call.remote_id)
    name = channel.name
    await asyncio.sleep(0.3)  # the app/dialplan is waiting for the digit by now
    if press == "ari":  # from the ;1 half: the ;2 half receives BEGIN and END
        await caller.client.send_dtmf(call.local_id, "2", duration_ms=100)
    else:
        reply = await ami.action("PlayDTMF", Channel=name, Digit="2", Duration="100",
                                 Receive="true")
        if reply.get("Response") != "Success":
            raise RuntimeError(f"PlayDTMF failed: {reply}")
    dtmf = await ami.wait_event(lambda e: e.get("Event") == "DTMFEnd"
                                and e.get("Channel") == name, 10)
    hangup = await ami.wait_event(lambda e: e.get("Event") == "Hangup"
                                  and e.get("Channel") == name, 10)
    with contextlib.suppress(Exception):
        await call.hangup()
    pressed = float(dtmf["Timestamp"])
    request = next((float(e["Timestamp"]) for e in ami.events
                    if e.get("Event") == "SoftHangupRequest" and e.get("Channel") == name),
                   None)
    return ((float(hangup["Timestamp"]) - pressed) * 1000,
            None if request is None else (request - pressed) * 1000)


VARIANTS = {
    "daemon": ("18005550300", "keypress-inbound"),
    "minimal ARI app": ("minimal", "keypress-bench"),
    "dialplan": ("native", "keypress-bench"),
    "fastagi": ("fastagi", "keypress-bench"),
}
PRESS = {"fastagi": "ari"}  # how each variant's digit is sent (default: AMI PlayDTMF)
WARM_UP = 2  # calls per variant not counted


async def run_interleaved(caller: Any, ami: AmiClient, variants: dict[str, tuple[str, str]],
                          calls: int, concurrency: int) -> dict[str, VariantResult]:
    """``calls`` calls per variant, round robin over the variants, ``concurrency`` at once."""
    results = {name: VariantResult() for name in variants}
    gate = asyncio.Semaphore(concurrency)

    async def task(name: str, index: int) -> None:
        number, context = variants[name]
        async with gate:
            try:
                ms, request = await asyncio.wait_for(
                    one_call(caller, ami, number, context, PRESS.get(name, "ami")), 30)
            except Exception as exc:
                results[name].failures.append(f"{type(exc).__name__}: {exc}")
                return
            if index >= WARM_UP:
                results[name].samples_ms.append(ms)
                if request is not None:
                    results[name].request_ms.append(request)

    await asyncio.gather(*(task(name, i) for i in range(calls + WARM_UP) for name in variants))
    return results


async def _fresh_database(admin_dsn: str) -> tuple[str, Callable[[], Any]]:
    import asyncpg

    from keypress_ari.store.db import migrate

    name = f"keypress_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(admin_dsn)
    dsn = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    return dsn, drop


@dataclass
class Bench:
    """What an end-to-end run works with: an Asterisk, a fresh database with the catalog, AMI
    (every event, stamped), an ARI client for the apps, and the run's results."""

    asterisk: Any
    dsn: str
    ami: AmiClient
    info: AriClient
    out: dict[str, Any]


@contextlib.asynccontextmanager
async def bench_setup(admin_dsn: str, workdir_prefix: str, extra_env: dict[str, str] | None
                      = None) -> AsyncIterator[tuple[Bench, AppProcess]]:
    """Start Asterisk (free test ports), the database, the daemon and the minimal app; stop
    them all afterwards. Yields the bench and the daemon's process."""
    import asyncpg

    from keypress_ari.flows.yamlio import load_catalog_yaml
    from keypress_ari.store.catalog import import_catalog
    from tests.support.asterisk import AsteriskServer

    asterisk = AsteriskServer.on_free_ports()
    await asterisk.start()
    dsn, drop = await _fresh_database(admin_dsn)
    bench = Bench(asterisk, dsn, AmiClient("127.0.0.1", asterisk.ami_port),
                  AriClient(asterisk.base_url, asterisk.ari_user, asterisk.ari_password,
                            app="kp-bench-drv"), {"variants": {}})
    try:
        data = await bench.info._request("GET", "/asterisk/info")
        bench.out["asterisk_version"] = (data or {}).get("system", {}).get("version", "?")
        await bench.ami.connect(asterisk.ami_user, asterisk.ami_password)
        conn = await asyncpg.connect(dsn)
        try:
            await import_catalog(conn, load_catalog_yaml(E2E_CATALOG, "bench-e2e.yaml"))
        finally:
            await conn.close()
        apps: list[AppProcess] = []
        with tempfile.TemporaryDirectory(prefix=workdir_prefix) as workdir:
            try:  # the apps stop before their directory goes
                daemon = await start_daemon_process(asterisk, bench.info, dsn, Path(workdir),
                                                    extra_env)
                apps.append(daemon)
                apps.append(await start_minimal_process(asterisk, bench.info))
                yield bench, daemon
                await asterisk.cleanup_channels()
            finally:
                for app in apps:
                    await app.stop()
    finally:
        await bench.info.close()
        await bench.ami.close()
        await asterisk.stop()
        await drop()


async def run_e2e(*, calls: int = 50, concurrency: int = 4, admin_dsn: str,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    from tests.support.caller import TestCaller

    async with bench_setup(admin_dsn, "kp-bench-e2e-") as (bench, daemon):
        asterisk = bench.asterisk
        caller = TestCaller(asterisk.base_url, asterisk.ari_user, asterisk.ari_password,
                            app="kp-bench-drv")
        await caller.start()
        try:
            # The variants' calls interleaved (same moments, same load on Asterisk).
            results = await run_interleaved(caller, bench.ami, VARIANTS, calls, concurrency)
        finally:
            await caller.close()
        for name, result in results.items():
            bench.out["variants"][name] = summarize_variant(name, result, log)
        bench.out["daemon_dtmf_to_request"] = await daemon_dtmf_histogram(daemon)
    bench.out.update(calls_per_variant=calls, concurrency=concurrency)
    return bench.out


def summarize_variant(name: str, result: VariantResult,
                      log: Callable[[str], None]) -> dict[str, Any]:
    ms = result.samples_ms
    row = {"n": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
           "max_ms": max(ms) if ms else float("nan"), "failures": result.failures[:5],
           "failed": len(result.failures), "samples_ms": ms}
    requests = result.request_ms
    if requests:  # where the time goes: before the request reaches Asterisk, and after
        row.update(request_n=len(requests), request_p50_ms=percentile(requests, 50),
                   request_p99_ms=percentile(requests, 99))
    log(f"  {name:>16}: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms "
        f"({len(ms)} calls, {len(result.failures)} failed)"
        + (f"; hangup request at Asterisk p50 {row['request_p50_ms']:.2f} ms"
           if requests else ""))
    return row


async def _run_minimal(base_url: str, user: str, password: str) -> None:
    app = MinimalAriApp(base_url, user, password, MINIMAL_APP)
    await app.start()
    try:
        await asyncio.Event().wait()  # until SIGTERM ends the process
    finally:
        await app.stop()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="the minimal ARI app, in its own process")
    parser.add_argument("--minimal-app", nargs=3, metavar=("URL", "USER", "PASSWORD"),
                        required=True)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default=procs.EVENT_LOOP)
    args = parser.parse_args()
    from keypress_ari.cli import loop_factory

    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        runner.run(_run_minimal(*args.minimal_app))
