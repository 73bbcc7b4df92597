"""A booted systemd container for tests/test_systemd_unit.py: the tree (Debian bookworm,
built once with debootstrap), ``make install DESTDIR=...`` into it, a drop-in pointing the
unit at the test Asterisk and database, and ``systemd-nspawn --boot`` sharing the host
network. Driven with ``nsenter`` into the container's PID 1 (no machined on the host, so no
``systemctl -M``). One machine per test module (booting costs a few seconds).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.asterisk import REPO_ROOT

__all__ = ["FIGURES", "UNIT", "WATCHDOG_SEC", "Machine", "machine", "sh", "until"]

ROOT = Path(os.environ.get("KEYPRESS_SYSTEMD_ROOT", "/var/cache/keypress-ari/systemd-root"))
MARKER = ROOT / ".keypress-ready"
MIRROR = os.environ.get("KEYPRESS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
UNIT = "keypress-ari"
WATCHDOG_SEC = 4
FIGURES: dict[str, float] = {}


def sh(*cmd: str, timeout: float = 60.0, check: bool = True) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def build_tree() -> None:
    """A bookworm minbase tree with systemd as init (once; ~75 s)."""
    if MARKER.exists():
        return
    assert shutil.which("debootstrap") and shutil.which("systemd-nspawn"), \
        "apt-get install -y debootstrap systemd-container"
    shutil.rmtree(ROOT, ignore_errors=True)
    sh("unshare", "--mount", "--propagation", "private", "debootstrap", "--variant=minbase",
       "--include=systemd,systemd-sysv,dbus,python3,python3-venv,ca-certificates",
       "bookworm", str(ROOT), MIRROR, timeout=600)
    (ROOT / "etc/hostname").write_text("kpsd\n")
    MARKER.touch()


class Machine:
    """A booted container: commands run in it through nsenter into its PID 1."""

    def __init__(self, proc: subprocess.Popen[bytes], console: Path) -> None:
        self.proc = proc
        self.console = console
        self.leader = 0

    def run(self, *cmd: str, timeout: float = 60.0, check: bool = True) -> str:
        return sh("nsenter", "-t", str(self.leader), "-a", *cmd, timeout=timeout, check=check)

    async def arun(self, *cmd: str, timeout: float = 60.0, check: bool = True) -> str:
        """:meth:`run` off the event loop (the test's ARI websocket keeps reading)."""
        return await asyncio.to_thread(self.run, *cmd, timeout=timeout, check=check)

    def verify(self, unit_path: str) -> subprocess.CompletedProcess[str]:
        """``systemd-analyze verify``: its warnings are on stderr, which run() drops."""
        return subprocess.run(["nsenter", "-t", str(self.leader), "-a", "systemd-analyze",
                               "verify", unit_path],
                              capture_output=True, text=True, timeout=60, check=False)

    def show(self, *props: str) -> dict[str, str]:
        out = self.run("systemctl", "show", UNIT, *(f"--property={p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self) -> list[dict[str, Any]]:
        out = self.run("journalctl", "-u", UNIT, "-o", "json", "--no-pager", check=False)
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def log_lines(self, pid: str | None = None) -> list[dict[str, Any]]:
        """The daemon's JSON log lines in the unit's journal (of process ``pid`` if given)."""
        lines = []
        for entry in self.journal():
            if pid is not None and entry.get("_PID") != pid:
                continue
            try:
                line = json.loads(entry.get("MESSAGE", ""))
            except (TypeError, ValueError):
                continue
            if isinstance(line, dict):
                lines.append(line)
        return lines


async def until(condition: Callable[[], Awaitable[Any] | Any], timeout: float, what: str) -> Any:
    """Poll ``condition`` until truthy (returned), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.1)  # polling another process's state, with a deadline


@pytest.fixture(scope="module")
async def machine(asterisk: Any, pg_dsn: str,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Machine]:
    """The container booted with the unit installed (not started); powered off after the
    module's tests."""
    await asyncio.to_thread(build_tree)
    await asyncio.to_thread(sh, "make", "-C", str(REPO_ROOT), "install", f"DESTDIR={ROOT}",
                            "PY=/usr/bin/python3", timeout=300)
    dropin = ROOT / "etc/systemd/system" / f"{UNIT}.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "test.conf").write_text(
        "# written by tests/support/systemd_machine.py: the test Asterisk and database\n"
        "[Service]\n"
        f"WatchdogSec={WATCHDOG_SEC}\n"
        f"Environment=KEYPRESS_ARI__URL={asterisk.base_url}\n"
        f"Environment=KEYPRESS_ARI__USER={asterisk.ari_user}\n"
        f"Environment=KEYPRESS_ARI__PASSWORD={asterisk.ari_password}\n"
        f"Environment=KEYPRESS_DATABASE__DSN={pg_dsn}\n")
    # A fresh state: no journal or state left by an earlier run.
    shutil.rmtree(ROOT / "var/lib/keypress-ari", ignore_errors=True)
    shutil.rmtree(ROOT / "var/log/journal", ignore_errors=True)
    console = tmp_path_factory.mktemp("systemd") / "console.log"
    with console.open("wb") as out:
        proc = subprocess.Popen(  # noqa: ASYNC220 (started once, not awaited)
            ["systemd-nspawn", "--boot", "-D", str(ROOT), "--register=no", "--keep-unit",
             "--machine", "kpsd-test"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    m = Machine(proc, console)
    try:
        def leader() -> int:
            assert proc.poll() is None, console.read_text(errors="replace")[-3000:]
            kids = sh("pgrep", "-P", str(proc.pid), check=False).split()
            return int(kids[0]) if kids else 0
        m.leader = await until(leader, 20, "the container's PID 1")
        t0 = time.monotonic()

        def booted() -> bool:
            state = m.run("systemctl", "is-system-running", check=False).strip()
            return state in ("running", "degraded")
        await until(booted, 60, "the container's boot")
        FIGURES["boot_s"] = time.monotonic() - t0
        yield m
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # nspawn: an orderly poweroff of the container
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait, 10)
        print(f"\nsystemd figures: {FIGURES}\nconsole tail:\n"
              + console.read_text(errors="replace")[-1500:])
