"""sd_notify: our client against real UNIX datagram sockets, and the daemon run as systemd
would run it (``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC``): READY, STATUS, WATCHDOG, STOPPING.
Also: a log line written while handling a call carries the call's id (JSON logs)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from keypress_ari.sdnotify import Notifier, socket_address, up_within, watchdog_interval
from tests.support.process import daemon_env


class Listener:
    """The systemd side: a bound datagram socket; each message is read with a timeout."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.setblocking(False)

    async def recv(self, timeout: float = 5.0) -> str:
        loop = asyncio.get_running_loop()
        try:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), timeout)
        except TimeoutError:
            raise AssertionError(f"no sd_notify message within {timeout}s") from None
        return data.decode()

    async def until(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> list[str]:
        """Messages up to and including the first that matches (overall ``timeout``)."""
        got: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                while not got or not predicate(got[-1]):
                    got.append(await self.recv(timeout))
        except TimeoutError:
            raise AssertionError(f"no matching message within {timeout}s; got {got}") from None
        return got

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A short folder for socket paths (108 bytes at most; pytest's tmp_path may be long)."""
    path = tempfile.mkdtemp(prefix="kp-notify-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def path_listener(short_dir: str) -> Iterator[tuple[str, Listener]]:
    path = os.path.join(short_dir, "notify.sock")
    listener = Listener(path)
    yield path, listener
    listener.close()


# ---- the client ----------------------------------------------------------------------------

async def test_messages_reach_a_path_socket(path_listener: tuple[str, Listener]) -> None:
    path, listener = path_listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("taking calls: app keypress, 3 numbers")
    assert await listener.recv() == "READY=1\nSTATUS=taking calls: app keypress, 3 numbers"
    assert notifier.status("two\nlines")
    assert await listener.recv() == "STATUS=two lines"  # a newline would start a new field
    assert notifier.watchdog()
    assert await listener.recv() == "WATCHDOG=1"
    assert notifier.stopping("stopping")
    assert await listener.recv() == "STOPPING=1\nSTATUS=stopping"
    assert notifier.ready() and notifier.stopping()
    assert [await listener.recv(), await listener.recv()] == ["READY=1", "STOPPING=1"]
    notifier.close()


async def test_messages_reach_an_abstract_socket() -> None:
    name = f"kp-notify-test-{uuid.uuid4().hex}"
    listener = Listener(b"\0" + name.encode())
    try:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert notifier.address == b"\0" + name.encode()
        assert notifier.ready("up")
        assert await listener.recv() == "READY=1\nSTATUS=up"
        assert notifier.watchdog()
        assert await listener.recv() == "WATCHDOG=1"
    finally:
        listener.close()


def test_socket_addresses() -> None:
    assert socket_address("/run/systemd/notify") == b"/run/systemd/notify"
    assert socket_address("@abc") == b"\0abc"
    assert socket_address("@") is None
    assert socket_address("vsock:2:1234") is None
    assert socket_address("relative/path") is None


async def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier.from_env({"WATCHDOG_USEC": "200000"})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    # No socket: the loop has nothing to do and returns at once.
    await asyncio.wait_for(notifier.watchdog_loop(lambda: True), 1.0)


def test_an_unsupported_notify_socket_is_disabled_with_a_warning() -> None:
    with capture_logs() as logs:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled and notifier.ready() is False
    assert [entry["log_level"] for entry in logs] == ["warning"]


def test_watchdog_interval_is_half_of_watchdog_usec_for_our_pid() -> None:
    me = os.getpid()
    assert watchdog_interval({"WATCHDOG_USEC": "200000"}) == pytest.approx(0.1)
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(me)}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(me + 1)}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({}) is None
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000",
                                  "WATCHDOG_PID": str(me)})
    assert notifier.watchdog_interval() == 0.5
    assert Notifier.from_env({"NOTIFY_SOCKET": "/x"}).watchdog_interval() is None


def test_a_failing_send_never_raises_and_warns_once(short_dir: str) -> None:
    missing = os.path.join(short_dir, "nobody-listens.sock")
    notifier = Notifier.from_env({"NOTIFY_SOCKET": missing})
    with capture_logs() as logs:
        assert notifier.ready("x") is False
        assert notifier.watchdog() is False
        assert notifier.stopping() is False
    assert [entry["log_level"] for entry in logs] == ["warning"]
    assert "READY=1" in logs[0]["message"]


async def test_a_full_receiver_queue_does_not_block_or_raise(short_dir: str) -> None:
    path = os.path.join(short_dir, "full.sock")
    listener = Listener(path)  # never read: its queue fills, the send would block
    try:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
        with capture_logs() as logs:
            results = [notifier.watchdog() for _ in range(5000)]
        assert results[0] is True and results[-1] is False
        assert [entry["log_level"] for entry in logs] == ["warning"]
    finally:
        listener.close()


async def test_the_watchdog_pings_only_while_healthy(
        path_listener: tuple[str, Listener]) -> None:
    path, listener = path_listener
    notifier = Notifier(socket_address(path), watchdog_every=0.001)
    notifier.status("taking calls")
    assert await listener.recv() == "STATUS=taking calls"
    answers = iter([True, True, False, False, True])

    def healthy() -> bool:
        return next(answers, True)

    task = asyncio.create_task(notifier.watchdog_loop(healthy))
    try:
        got = [await listener.recv() for _ in range(5)]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # Datagrams on one socket keep their order: nothing was sent on the second failing check.
    assert got == ["WATCHDOG=1", "WATCHDOG=1", "STATUS=unhealthy: watchdog pings withheld",
                   "WATCHDOG=1", "STATUS=taking calls"]


async def test_a_raising_health_check_counts_as_unhealthy(
        path_listener: tuple[str, Listener]) -> None:
    path, listener = path_listener
    notifier = Notifier(socket_address(path), watchdog_every=0.001)
    calls = 0

    def healthy() -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return True

    task = asyncio.create_task(notifier.watchdog_loop(healthy))
    try:
        got = [await listener.recv() for _ in range(2)]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert got == ["STATUS=unhealthy: watchdog pings withheld", "WATCHDOG=1"]


def test_up_within_gives_a_grace_period() -> None:
    now = [100.0]
    up = [False]
    check = up_within(lambda: up[0], 60.0, clock=lambda: now[0])
    assert check()              # starting: the grace counts from creation
    now[0] = 159.0
    assert check()
    now[0] = 160.0
    assert not check()          # never up within the grace
    up[0] = True
    assert check()
    up[0], now[0] = False, 219.0
    assert check()              # down 59 s
    now[0] = 220.5
    assert not check()          # down 60.5 s


# ---- the daemon under a fake systemd ---------------------------------------------------------

@dataclass
class DaemonProcess:
    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self.changed.set()

    async def json_line(self, predicate: Callable[[dict[str, Any]], bool],
                        timeout: float = 10.0) -> dict[str, Any]:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for line in self.lines:
                        with contextlib.suppress(ValueError):
                            entry = json.loads(line)
                            if isinstance(entry, dict) and predicate(entry):
                                return entry
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError("no such log line; last: " + "\n".join(self.lines[-20:])) \
                from None

    def output(self) -> str:
        return "\n".join(self.lines[-40:])


@contextlib.asynccontextmanager
async def daemon_under_systemd(env: dict[str, str]) -> AsyncIterator[DaemonProcess]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "keypress_ari", "run", env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    daemon = DaemonProcess(proc)
    reader = asyncio.create_task(daemon.read_stderr())
    try:
        yield daemon
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await reader


@pytest.mark.asterisk
@pytest.mark.pg
async def test_the_daemon_speaks_sd_notify(
        asterisk: Any, pg_dsn: str, db: asyncpg.Pool,
        path_listener: tuple[str, Listener], tmp_path: Path) -> None:
    path, listener = path_listener
    env = daemon_env(asterisk, pg_dsn, tmp_path / "state")
    env.update({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})  # pings every 0.1 s
    env.pop("WATCHDOG_PID", None)
    async with daemon_under_systemd(env) as daemon:
        try:
            startup = await listener.until(lambda m: "READY=1" in m.split("\n"), 20.0)
            ready = startup[-1].split("\n")
            assert ready[0] == "READY=1"
            assert ready[1] == "STATUS=taking calls: app keypress, 0 numbers"
            pings = await listener.until(lambda m: m == "WATCHDOG=1")
            pings += await listener.until(lambda m: m == "WATCHDOG=1")
            assert pings.count("WATCHDOG=1") >= 2
            daemon.proc.send_signal(signal.SIGTERM)
            stopping = await listener.until(lambda m: m.startswith("STOPPING=1"))
            assert stopping[-1].startswith("STOPPING=1\nSTATUS=stopping")
            assert await asyncio.wait_for(daemon.proc.wait(), 20) == 0
        except AssertionError as exc:
            raise AssertionError(f"{exc}\ndaemon output:\n{daemon.output()}") from None
    # After STOPPING (and maybe more pings while calls finish): the final STATUS.
    rest = await listener.until(lambda m: m == "STATUS=stopped", 2.0)
    assert all(m in ("WATCHDOG=1", "STATUS=stopped") for m in rest)


@pytest.mark.asterisk
@pytest.mark.pg
async def test_a_call_s_log_lines_carry_its_call_id(
        asterisk: Any, pg_dsn: str, db: asyncpg.Pool, test_caller: Any,
        path_listener: tuple[str, Listener], tmp_path: Path) -> None:
    path, listener = path_listener
    env = daemon_env(asterisk, pg_dsn, tmp_path / "state")  # JSON logs (KEYPRESS_LOG__FORMAT=json)
    env["NOTIFY_SOCKET"] = path  # READY=1 tells when the daemon takes calls
    async with daemon_under_systemd(env) as daemon:
        await listener.until(lambda m: "READY=1" in m.split("\n"), 20.0)
        call = await test_caller.place_call("999")  # no such number: refused
        line = await daemon.json_line(lambda e: e.get("event") == "unknown number; hanging up")
        daemon.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(daemon.proc.wait(), 20) == 0
    assert line["call_id"]
    assert line["channel_id"] == call.remote_id
    assert line["level"] == "info" and line["number"] == "999"
    # Outside a call's handling nothing is bound.
    started = await daemon.json_line(lambda e: e.get("event") == "daemon started")
    assert "call_id" not in started
