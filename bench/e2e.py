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
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.inprocess import percentile
from keypress_ari.ari.client import AriClient
from keypress_ari.ari.events import ChannelDtmfReceived, Event, StasisStart
from keypress_ari.ari.stream import EventStream

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

AmiMessage = dict[str, str]


class AmiClient:
    """A minimal AMI client: login, actions with ActionID, events to waiters."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._responses: dict[str, asyncio.Future[AmiMessage]] = {}
        self._waiters: list[tuple[Callable[[AmiMessage], bool], asyncio.Future[AmiMessage]]] = []
        self.events: list[AmiMessage] = []

    async def connect(self, user: str, secret: str, events: str = "call,dtmf") -> None:
        reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), 5)
        self._reader = reader
        await asyncio.wait_for(reader.readline(), 5)  # the banner
        self._task = asyncio.create_task(self._read_loop(), name="ami-reader")
        reply = await self.action("Login", Username=user, Secret=secret, Events=events)
        if reply.get("Response") != "Success":
            raise RuntimeError(f"AMI login failed: {reply}")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def action(self, name: str, timeout: float = 5.0, **fields: str) -> AmiMessage:
        assert self._writer is not None
        action_id = f"kpb-{next(self._ids)}"
        future: asyncio.Future[AmiMessage] = asyncio.get_running_loop().create_future()
        self._responses[action_id] = future
        lines = [f"Action: {name}", f"ActionID: {action_id}"]
        lines += [f"{k}: {v}" for k, v in fields.items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self._writer.drain()
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._responses.pop(action_id, None)

    async def wait_event(self, predicate: Callable[[AmiMessage], bool],
                         timeout: float = 10.0) -> AmiMessage:
        for event in self.events:
            if predicate(event):
                return event
        future: asyncio.Future[AmiMessage] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiters = [(p, f) for p, f in self._waiters if f is not future]

    async def _read_loop(self) -> None:
        assert self._reader is not None
        message: AmiMessage = {}
        while True:  # ends with the connection (EOF) or cancellation
            raw = await self._reader.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line:
                key, _, value = line.partition(":")
                message[key.strip()] = value.strip()
                continue
            if message:
                self._dispatch(message)
            message = {}

    def _dispatch(self, message: AmiMessage) -> None:
        action_id = message.get("ActionID", "")
        if "Response" in message and action_id in self._responses:
            future = self._responses[action_id]
            if not future.done():
                future.set_result(message)
            return
        if "Event" not in message:
            return
        self.events.append(message)
        if len(self.events) > 20_000:
            del self.events[:10_000]
        for predicate, future in self._waiters:
            if not future.done() and predicate(message):
                future.set_result(message)


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
    from keypress_ari.config import AriSettings, DatabaseSettings, Settings
    from keypress_ari.daemon import Daemon
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
    try:
        info = AriClient(asterisk.base_url, asterisk.ari_user, asterisk.ari_password,
                         app="kp-bench-drv")
        try:
            data = await info._request("GET", "/asterisk/info")
            out["asterisk_version"] = (data or {}).get("system", {}).get("version", "?")
        finally:
            await info.close()
        await ami.connect(asterisk.ami_user, asterisk.ami_password)
        await caller.start()

        settings = Settings(
            ari=AriSettings(url=asterisk.base_url, user=asterisk.ari_user,
                            password=asterisk.ari_password, app="keypress"),
            database=DatabaseSettings(dsn=dsn))
        daemon = Daemon(settings)
        inside: list[float] = []  # the daemon's own DTMF -> first request, seconds
        observe = daemon.metrics.observe_dtmf_to_ari

        def observe_too(seconds: float) -> None:
            inside.append(seconds)
            observe(seconds)

        daemon.metrics.observe_dtmf_to_ari = observe_too  # type: ignore[method-assign]
        minimal = MinimalAriApp(asterisk.base_url, asterisk.ari_user, asterisk.ari_password,
                                "kp-bench-min")
        await daemon.start()
        await minimal.start()
        try:
            assert daemon.stream is not None and daemon.pool is not None
            async with daemon.pool.acquire() as conn:
                await import_catalog(conn, load_catalog_yaml(E2E_CATALOG, "bench-e2e.yaml"))
            await daemon.reload_catalog()
            await daemon.stream.wait_connected(10)
            # The three variants' calls interleaved (same moments, same load on Asterisk).
            results = await run_interleaved(caller, ami, VARIANTS, calls, concurrency)
            for name, result in results.items():
                out["variants"][name] = summarize_variant(name, result, log)
            own = [x * 1000 for x in inside[WARM_UP:]]
            out["daemon_dtmf_to_request_ms"] = {
                "n": len(own), "p50_ms": percentile(own, 50), "p99_ms": percentile(own, 99)}
        finally:
            await asterisk.cleanup_channels()
            await minimal.stop()
            await daemon.stop()
    finally:
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
