"""config/keypress-ari.service under a real systemd: PID 1 of a systemd-nspawn container
(Debian bookworm, built once with debootstrap) that shares the host network, so the daemon
inside reaches the test Asterisk and PostgreSQL on 127.0.0.1. The tree is set up with
``make install DESTDIR=...``; a drop-in points the unit at the test Asterisk and database
and shortens WatchdogSec. Driven with ``nsenter`` into the container (no machined on the
host, so no ``systemctl -M``).

Needs root and systemd-nspawn (apt-get install systemd-container debootstrap): run with
``make systemd-test`` (sets KEYPRESS_SYSTEMD_TEST=1); skipped otherwise.
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

pytestmark = [
    pytest.mark.systemd, pytest.mark.asterisk, pytest.mark.pg,
    pytest.mark.skipif(os.environ.get("KEYPRESS_SYSTEMD_TEST") != "1",
                       reason="needs root and systemd-nspawn: make systemd-test"),
]

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


@pytest.fixture
async def machine(asterisk: Any, pg_dsn: str, tmp_path: Path) -> AsyncIterator[Machine]:
    await asyncio.to_thread(build_tree)
    await asyncio.to_thread(sh, "make", "-C", str(REPO_ROOT), "install", f"DESTDIR={ROOT}",
                            "PY=/usr/bin/python3", timeout=300)
    dropin = ROOT / "etc/systemd/system" / f"{UNIT}.service.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "test.conf").write_text(
        "# written by tests/test_systemd_unit.py: the test Asterisk and database\n"
        "[Service]\n"
        f"WatchdogSec={WATCHDOG_SEC}\n"
        f"Environment=KEYPRESS_ARI__URL={asterisk.base_url}\n"
        f"Environment=KEYPRESS_ARI__USER={asterisk.ari_user}\n"
        f"Environment=KEYPRESS_ARI__PASSWORD={asterisk.ari_password}\n"
        f"Environment=KEYPRESS_DATABASE__DSN={pg_dsn}\n")
    # A fresh state: no journal or state left by an earlier run.
    shutil.rmtree(ROOT / "var/lib/keypress-ari", ignore_errors=True)
    shutil.rmtree(ROOT / "var/log/journal", ignore_errors=True)
    console = tmp_path / "console.log"
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


async def test_the_unit_under_systemd(machine: Machine, test_caller: Any) -> None:
    m = machine
    # The user came from the sysusers.d file, the config's group from the tmpfiles.d file.
    assert m.run("id", "-u", "keypress-ari").strip()
    assert m.run("stat", "-c", "%a %U:%G", "/etc/keypress-ari/keypress-ari.toml").strip() \
        == "640 root:keypress-ari"

    # The installed unit: no complaints from systemd, and its hardening score.
    verify = m.verify(f"/lib/systemd/system/{UNIT}.service")
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
    security = m.run("systemd-analyze", "security", UNIT, "--no-pager", check=False)
    score = float(security.split("Overall exposure level for")[1].split(":")[1].split()[0])
    FIGURES["security_exposure"] = score
    assert score <= 2.0, security

    # Type=notify: `systemctl start` returns once READY=1 came.
    t0 = time.monotonic()
    m.run("systemctl", "start", UNIT, timeout=90)
    FIGURES["start_to_ready_s"] = time.monotonic() - t0
    info = m.show("ActiveState", "SubState", "StatusText", "MainPID", "NRestarts")
    assert info["ActiveState"] == "active", info
    assert info["StatusText"].startswith("taking calls: app keypress"), info
    status = m.run("systemctl", "status", UNIT, "--no-pager", check=False)
    assert "Status: \"taking calls: app keypress" in status, status

    # Hardening leaves the state directory writable: the journal lives there.
    assert m.run("stat", "-c", "%U %a", "/var/lib/keypress-ari").strip() == "keypress-ari 750"
    listing = m.run("find", "/var/lib/keypress-ari", "-maxdepth", "2")
    assert "/var/lib/keypress-ari/journal" in listing, listing

    # A call: its log lines in the journal (JSON) carry the call id.
    call = await test_caller.place_call("999")  # not in the catalog: refused

    def call_line() -> dict[str, Any] | None:
        for entry in m.journal():
            try:
                line = json.loads(entry.get("MESSAGE", ""))
            except (TypeError, ValueError):
                continue
            if isinstance(line, dict) and line.get("channel_id") == call.remote_id \
                    and line.get("call_id"):
                return line
        return None
    line = await until(call_line, 15, "a journal line with the call's call_id")
    assert line["event"] == "unknown number; hanging up", line

    # A wedged daemon (SIGSTOP) sends no watchdog pings: systemd kills it and restarts it.
    old = info["MainPID"]
    t0 = time.monotonic()
    m.run("systemctl", "kill", "--kill-whom=main", "--signal=SIGSTOP", UNIT)

    def restarted() -> dict[str, str] | None:
        now = m.show("ActiveState", "MainPID", "NRestarts", "StatusText")
        ok = (now["MainPID"] not in ("0", old) and now["ActiveState"] == "active"
              and now["StatusText"].startswith("taking calls"))
        return now if ok else None
    after = await until(restarted, WATCHDOG_SEC + 30, "a restart by the watchdog")
    FIGURES["sigstop_to_ready_again_s"] = time.monotonic() - t0
    assert int(after["NRestarts"]) >= 1, after
    killed = " ".join(e.get("MESSAGE", "") for e in m.journal())
    assert "Watchdog timeout" in killed, killed[-2000:]

    # `systemctl stop`: SIGTERM, the daemon drains and exits 0.
    t0 = time.monotonic()
    m.run("systemctl", "stop", UNIT, timeout=60)
    FIGURES["stop_s"] = time.monotonic() - t0
    done = m.show("ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
    assert done["ActiveState"] == "inactive" and done["Result"] == "success", done
    assert done["ExecMainStatus"] == "0", done
    messages = [e.get("MESSAGE", "") for e in m.journal()]
    denied = [t for t in messages if "Permission denied" in t or "Read-only file" in t]
    assert not denied, denied
