"""End to end on a real Asterisk: key press -> hangup, timed by Asterisk's own clock.

Three variants of the same job (answer, wait for one digit, hang up), their calls
interleaved (round robin, a few at once) in one run on one Asterisk (started from
``asterisk/etc`` on free test ports):

* ``daemon``: the keypress-ari daemon (``Daemon``, with a fresh PostgreSQL database when
  one answers at ``KEYPRESS_TEST_DSN``), number 18005550300 in ``keypress-inbound``: router
  without a prompt, press 2 = disposition, so the call is hung up;
* ``minimal ARI app``: a single-purpose Stasis app on the project's thin ARI client
  (answer on StasisStart, hang up on the first ChannelDtmfReceived), ``minimal@keypress-bench``;
* ``dialplan``: ``Answer() / Read(,,1) / Hangup()``, ``native@keypress-bench``.

Each call is a Local channel originated into the bench's own app (the ``;1`` half, as the
tests' caller does); once the ``;2`` half is answered the digit is injected on ``;2`` with
AMI ``PlayDTMF`` (``Receive: true``: the channel receives it as from its peer). Latency is
the AMI ``Hangup`` event's ``Timestamp`` minus the ``DTMFEnd`` event's (``timestampevents
= yes`` in ``manager.conf``), both for the ``;2`` channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

if __name__ == "__main__":  # run as a script (the minimal app's own process)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import procs
from bench.ami import AmiClient
from bench.procs import percentile, stop_process
from keypress_ari.ari.client import AriClient
from keypress_ari.ari.errors import AriError
from keypress_ari.ari.events import ChannelDtmfReceived, Event, StasisStart
from keypress_ari.ari.stream import EventStream

MINIMAL_APP = "kp-bench-min"  # its Stasis app (asterisk/etc/extensions.conf, keypress-bench)
_THIS_FILE = str(Path(__file__).resolve())

E2E_CATALOG = """
flow_groups:
  - name: bench-e2e
    flows:
      - {key: "2", disposition: bench_done}
routers:
  - {name: bench-e2e, request_key_press: true, press_1_timeout: 60, flow_group: bench-e2e}
numbers:
  - {number: "18005550300", router: bench-e2e}
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class AppProcess:
    """The daemon or the minimal app, each in its own process as in production (sharing the
    bench's event loop would put each app's handling behind the others' callbacks)."""

    proc: asyncio.subprocess.Process
    admin_url: str = ""
    admin_token: str = ""

    async def stop(self) -> None:
        await stop_process(self.proc, 10)


async def wait_app_registered(base_url: str, user: str, password: str, app: str,
                              proc: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    """Until ``app`` has an events websocket on Asterisk (ARI knows the application)."""
    client = AriClient(base_url, user, password, app="kp-bench-probe")
    deadline = time.monotonic() + timeout
    try:
        while True:  # bounded by the deadline
            if proc.returncode is not None:
                raise RuntimeError(f"{app}: the process exited ({proc.returncode})")
            try:
                await client.get_application(app)
                return
            except AriError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{app} did not register with ARI") from None
            await asyncio.sleep(0.1)
    finally:
        await client.close()


async def start_daemon_process(base_url: str, user: str, password: str, dsn: str,
                               workdir: Path) -> AppProcess:
    """``keypress-ari run`` with a config of its own (admin API on a free port)."""
    token = uuid.uuid4().hex
    admin_port = _free_port()
    config = workdir / "keypress-ari.toml"
    config.write_text(f"""
[ari]
url = "{base_url}"
user = "{user}"
password = "{password}"
app = "keypress"

[database]
dsn = "{dsn}"

[log]
level = "warning"

[admin]
host = "127.0.0.1"
port = {admin_port}
token = "{token}"

[journal]
state_dir = "{workdir / "state"}"

[runtime]
event_loop = "{procs.EVENT_LOOP}"
""")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "keypress_ari", "--config", str(config), "run",
        stdin=asyncio.subprocess.DEVNULL)
    app = AppProcess(proc, f"http://127.0.0.1:{admin_port}", token)
    try:
        await wait_app_registered(base_url, user, password, "keypress", proc)
    except BaseException:
        await app.stop()
        raise
    return app


async def start_minimal_process(base_url: str, user: str, password: str) -> AppProcess:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, _THIS_FILE, "--minimal-app", base_url, user,
        password, "--loop", procs.EVENT_LOOP, stdin=asyncio.subprocess.DEVNULL)
    app = AppProcess(proc)
    try:
        await wait_app_registered(base_url, user, password, MINIMAL_APP, proc)
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
    failures: list[str] = field(default_factory=list)


async def one_call(caller: Any, ami: AmiClient, number: str, context: str) -> float:
    """Place a call, press 2 on its ;2 half with AMI, return DTMFEnd -> Hangup in ms."""
    call = await caller.place_call(number, context=context, timeout=10)
    if not call.answered:
        raise RuntimeError(f"{number}@{context} was not answered")
    channel = await caller.client.get_channel(call.remote_id)
    name = channel.name
    await asyncio.sleep(0.3)  # the app/dialplan is waiting for the digit by now
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
    return (float(hangup["Timestamp"]) - float(dtmf["Timestamp"])) * 1000


VARIANTS = {
    "daemon": ("18005550300", "keypress-inbound"),
    "minimal ARI app": ("minimal", "keypress-bench"),
    "dialplan": ("native", "keypress-bench"),
}
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
                ms = await asyncio.wait_for(one_call(caller, ami, number, context), 30)
            except Exception as exc:
                results[name].failures.append(f"{type(exc).__name__}: {exc}")
                return
            if index >= WARM_UP:
                results[name].samples_ms.append(ms)

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


async def run_e2e(*, calls: int = 50, concurrency: int = 4, admin_dsn: str,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    from keypress_ari.flows.yamlio import load_catalog_yaml
    from keypress_ari.store.catalog import import_catalog
    from tests.support.asterisk import AsteriskServer
    from tests.support.caller import TestCaller

    asterisk = AsteriskServer.on_free_ports()
    await asterisk.start()
    out: dict[str, Any] = {"variants": {}}
    dsn, drop = await _fresh_database(admin_dsn)
    caller = TestCaller(asterisk.base_url, asterisk.ari_user, asterisk.ari_password,
                        app="kp-bench-drv")
    ami = AmiClient("127.0.0.1", asterisk.ami_port)
    creds = (asterisk.base_url, asterisk.ari_user, asterisk.ari_password)
    apps: list[AppProcess] = []
    try:
        info = AriClient(*creds, app="kp-bench-drv")
        try:
            data = await info._request("GET", "/asterisk/info")
            out["asterisk_version"] = (data or {}).get("system", {}).get("version", "?")
        finally:
            await info.close()
        await ami.connect(asterisk.ami_user, asterisk.ami_password)
        await caller.start()
        import asyncpg

        conn = await asyncpg.connect(dsn)
        try:
            await import_catalog(conn, load_catalog_yaml(E2E_CATALOG, "bench-e2e.yaml"))
        finally:
            await conn.close()
        with tempfile.TemporaryDirectory(prefix="kp-bench-e2e-") as workdir:
            daemon = await start_daemon_process(*creds, dsn, Path(workdir))
            apps.append(daemon)
            apps.append(await start_minimal_process(*creds))
            # The three variants' calls interleaved (same moments, same load on Asterisk).
            results = await run_interleaved(caller, ami, VARIANTS, calls, concurrency)
            for name, result in results.items():
                out["variants"][name] = summarize_variant(name, result, log)
            out["daemon_dtmf_to_request"] = await daemon_dtmf_histogram(daemon)
            await asterisk.cleanup_channels()
            for app in apps:
                await app.stop()
    finally:
        for app in apps:
            await app.stop()
        await caller.close()
        await ami.close()
        await asterisk.stop()
        await drop()
    out["calls_per_variant"] = calls
    out["concurrency"] = concurrency
    return out


def summarize_variant(name: str, result: VariantResult,
                      log: Callable[[str], None]) -> dict[str, Any]:
    ms = result.samples_ms
    row = {"n": len(ms), "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99),
           "max_ms": max(ms) if ms else float("nan"), "failures": result.failures[:5],
           "failed": len(result.failures), "samples_ms": ms}
    log(f"  {name:>16}: p50 {row['p50_ms']:.2f} ms, p99 {row['p99_ms']:.2f} ms "
        f"({len(ms)} calls, {len(result.failures)} failed)")
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
