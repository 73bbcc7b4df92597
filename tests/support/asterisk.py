"""A real Asterisk for the test suite, started from ``asterisk/run-asterisk.sh``.

It listens on test ports (HTTP 18088, AMI 15038, SIP 15060, RTP 11000-11999, all on
127.0.0.1) so that it never collides with a development Asterisk on the default ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp

from keypress_ari.ari.auth import basic_auth_header

__all__ = ["REPO_ROOT", "AsteriskServer", "AsteriskStartError"]

REPO_ROOT = Path(__file__).resolve().parents[2]
RUN_SCRIPT = REPO_ROOT / "asterisk" / "run-asterisk.sh"
DEFAULT_CHROOT = "/var/cache/keypress-ari/asterisk-sid"


class AsteriskStartError(RuntimeError):
    """Asterisk did not start or did not answer ARI in time."""


class AsteriskServer:
    """Start, probe and stop one Asterisk process (its own process group).

    The PID of the process *is* Asterisk's (run-asterisk.sh execs it), so SIGTERM stops
    Asterisk itself; :meth:`stop` always reaps the process.
    """

    ari_user = "keypress"
    ari_password = "keypress-secret"
    ami_user = "keypress"
    ami_password = "keypress-secret"

    def __init__(
        self,
        *,
        http_port: int = 18088,
        ami_port: int = 15038,
        sip_port: int = 15060,
        rtp_start: int = 11000,
        rtp_end: int = 11999,
        agi_port: int = 14573,
        rundir: Path | None = None,
    ) -> None:
        self.http_port = http_port
        self.agi_port = agi_port  # where features.conf's applicationmap sends FastAGI
        self.ami_port = ami_port
        self.sip_port = sip_port
        self.rtp_start = rtp_start
        self.rtp_end = rtp_end
        self._own_rundir = rundir is None
        # Short path: Asterisk's control socket lives in RUNDIR/run (unix path limit).
        self.rundir = (rundir or Path(tempfile.mkdtemp(prefix="kp-ast-"))).resolve()
        self.base_url = f"http://127.0.0.1:{http_port}/ari"
        self._auth = {"Authorization": basic_auth_header(self.ari_user, self.ari_password)}
        self._proc: subprocess.Popen[bytes] | None = None
        self._output_path = self.rundir / "asterisk.out"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def output_tail(self, lines: int = 30) -> str:
        """The last lines Asterisk (and run-asterisk.sh) printed."""
        try:
            text = self._output_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"

    async def start(self, timeout: float = 30.0) -> None:
        """Start Asterisk and wait until ``GET /ari/asterisk/ping`` answers."""
        if self._proc is not None:
            raise AsteriskStartError("this AsteriskServer is already started")
        self._check_ports_free()
        self._proc = self._spawn()
        try:
            await self._wait_ready(time.monotonic() + timeout, timeout)
        except BaseException:
            await self.stop()
            raise

    @classmethod
    def on_free_ports(cls, max_slots: int = 8) -> AsteriskServer:
        """A server on the first set of test ports that is free (slot k adds k to the TCP/UDP
        ports and k*1000 to the RTP range), so that concurrent test runs on one machine
        (developers, helpers, CI) do not collide."""
        problems: list[str] = []
        for k in range(max_slots):
            server = cls(http_port=18088 + k, ami_port=15038 + k, sip_port=15060 + 2 * k,
                         rtp_start=20000 + 1000 * k, rtp_end=20999 + 1000 * k,
                         agi_port=14573 + k)
            try:
                server._check_ports_free()
            except AsteriskStartError as exc:
                problems.append(str(exc))
                server._discard_rundir()
                continue
            return server
        raise AsteriskStartError("no free set of test ports: " + "; ".join(problems))

    def _discard_rundir(self) -> None:
        if self._own_rundir:
            shutil.rmtree(self.rundir, ignore_errors=True)

    def _check_ports_free(self) -> None:
        """Fail early if another Asterisk (another test run?) holds our ports: Asterisk
        does not exit when it cannot bind HTTP, and the ping would reach the other one."""
        for kind, port in (
            (socket.SOCK_STREAM, self.http_port),
            (socket.SOCK_STREAM, self.ami_port),
            (socket.SOCK_DGRAM, self.sip_port),
            (socket.SOCK_STREAM, self.agi_port),
        ):
            with socket.socket(socket.AF_INET, kind) as probe:
                # As Asterisk does: TIME_WAIT leftovers of the last run are no obstacle.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError as exc:
                    raise AsteriskStartError(
                        f"port {port} on 127.0.0.1 is in use ({exc.strerror}): is another "
                        "Asterisk or test run using the test ports?"
                    ) from None

    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = [
            str(RUN_SCRIPT),
            str(self.rundir),
            "--http-port", str(self.http_port),
            "--agi-port", str(self.agi_port),
            "--ami-port", str(self.ami_port),
            "--sip-port", str(self.sip_port),
            "--rtp-start", str(self.rtp_start),
            "--rtp-end", str(self.rtp_end),
        ]  # fmt: skip
        with open(self._output_path, "wb") as output:
            return subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group
            )

    async def _wait_ready(self, deadline: float, budget: float) -> None:
        url = f"{self.base_url}/asterisk/ping"
        last_error = "no attempt"
        probe_timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=probe_timeout) as session:
            while time.monotonic() < deadline:  # bounded by the deadline
                assert self._proc is not None
                code = self._proc.poll()
                if code is not None:
                    raise AsteriskStartError(
                        f"Asterisk exited with code {code} before answering ARI "
                        f"(port {self.http_port} in use? another Asterisk with this "
                        f"rundir?):\n{self.output_tail()}"
                    )
                try:
                    async with session.get(url, headers=self._auth) as resp:
                        if resp.status == 200:
                            return
                        last_error = f"HTTP {resp.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                await asyncio.sleep(0.05)  # polling an external process, not test sync
        raise AsteriskStartError(
            f"ARI at {url} did not answer within {budget:.0f}s ({last_error}):\n"
            f"{self.output_tail()}"
        )

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait (bounded), then SIGKILL the process group; always reap."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait, 5.0)
        else:
            proc.wait()
        # run-asterisk.sh made an empty mount point for RUNDIR inside the chroot (if it used
        # one); now that the process and its mount namespace are gone, remove it.
        chroot = Path(os.environ.get("KEYPRESS_ASTERISK_ROOT", DEFAULT_CHROOT))
        with contextlib.suppress(OSError):
            (chroot / self.rundir.relative_to("/")).rmdir()
        if self._own_rundir:
            shutil.rmtree(self.rundir, ignore_errors=True)

    async def cleanup_channels(self, timeout: float = 5.0) -> list[str]:
        """Hang up every channel and wait (bounded) until none is left.

        Returns the ids that were still up. Raises AssertionError if channels survive.
        """
        deadline = time.monotonic() + timeout
        found: list[str] = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0)) as session:
            while True:  # bounded by the deadline
                async with session.get(f"{self.base_url}/channels", headers=self._auth) as resp:
                    resp.raise_for_status()
                    ids = [str(ch["id"]) for ch in await resp.json()]
                if not ids:
                    return found
                found.extend(i for i in ids if i not in found)
                for channel_id in ids:
                    async with session.delete(
                        f"{self.base_url}/channels/{quote(channel_id, safe='')}", headers=self._auth
                    ):
                        pass  # 404: it went away by itself meanwhile
                if time.monotonic() >= deadline:
                    raise AssertionError(f"channels still up after {timeout}s: {ids}")
                await asyncio.sleep(0.05)  # bounded polling, see docstring
