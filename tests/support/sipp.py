"""SIPp agents for tests: real SIP calls with RFC 4733 DTMF against the test Asterisk.

* :func:`sipp_caller` -- a UAC on 127.0.0.1 (``identify`` of endpoint ``caller``) that dials
  a number in ``keypress-inbound`` and, once answered, sends digits in RTP.
* :func:`sipp_buyer` -- a UAS on 127.0.0.2 (``acme``) or 127.0.0.3 (``globex``) that takes
  Asterisk's call to ``PJSIP/acme`` and answers and sends digits, is busy, or never answers.

Each agent runs one ``sipp`` process (its own process group) for one call (``-m 1``), in
its own working folder holding a copy of the scenario (``tests/sipp/*.xml``), the call's
``dtmf.pcap`` (:mod:`tests.support.dtmf_pcap`; its silence lead-in is the delay before the
first digit) and SIPp's logs: ``messages.log`` (every SIP message), ``errors.log``,
``screen.log`` (the final statistics screen) and ``stderr.log``.
Every socket is bound to the agent's 127.0.0.x address (``-bind_local``, ``-mi``, ``-ci``).

SIPp's exit code (:meth:`SippAgent.wait`): 0 every call succeeded, 1 a call failed,
97 stopped by an internal command, 99 no call processed, 255 fatal error, 254 could not
bind its sockets. A missing ``sipp`` binary is an error (:class:`SippNotInstalled`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal, Self

from tests.support.asterisk import REPO_ROOT, AsteriskServer
from tests.support.dtmf_pcap import pcap_duration_ms, write_dtmf_pcap

__all__ = [
    "SCENARIO_DIR",
    "BuyerMode",
    "SippAgent",
    "SippNotInstalled",
    "sipp_binary",
    "sipp_buyer",
    "sipp_caller",
]

SCENARIO_DIR = REPO_ROOT / "tests" / "sipp"
BuyerMode = Literal["answer_dtmf", "busy", "noanswer"]
_BUYER_SCENARIOS: dict[str, str] = {
    "answer_dtmf": "uas_answer_dtmf.xml",
    "busy": "uas_busy.xml",
    "noanswer": "uas_noanswer.xml",
}
EXIT_MEANINGS: dict[int, str] = {
    0: "all calls succeeded",
    1: "at least one call failed",
    97: "exit on internal command",
    99: "normal exit without calls processed",
    255: "fatal error",
    254: "fatal error binding a socket",
}
# Media ports of SIPp agents: away from Asterisk's RTP ranges (test slots: 20000-27999).
MEDIA_PORT_RANGE = (40000, 59996)

# (ip, port) pairs handed out to agents of this process and not yet released: probing a
# port by binding it says nothing about another agent that has not started sipp yet.
_reserved: set[tuple[str, int]] = set()


class SippNotInstalled(RuntimeError):
    """The ``sipp`` binary is missing (an error of the tests that need it, never a skip)."""


def sipp_binary() -> str:
    """The path of ``sipp`` (Debian package ``sip-tester``)."""
    path = shutil.which("sipp")
    if path is None:
        raise SippNotInstalled(
            "sipp not installed: run make system-deps (Debian/Ubuntu package sip-tester)"
        )
    return path


def _udp_free(ip: str, port: int) -> bool:
    return (ip, port) not in _reserved and _bindable(ip, port)


def _bindable(ip: str, port: int) -> bool:
    """Whether nothing holds UDP ``ip:port`` (a bind without SO_REUSEADDR succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((ip, port))
        except OSError:
            return False
    return True


def _reserve_sip_port(ip: str) -> int:
    """A free UDP port on ``ip`` chosen by the kernel (not one reserved already)."""
    for _ in range(50):  # bounded
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((ip, 0))
            port = int(probe.getsockname()[1])
        if (ip, port) not in _reserved:
            _reserved.add((ip, port))
            return port
    raise RuntimeError(f"no free UDP port on {ip}")


def _reserve_media_port(ip: str) -> int:
    """A port P with P..P+3 free on ``ip`` (SIPp binds P for audio and P+2 for video)."""
    low, high = MEDIA_PORT_RANGE
    slots = (high - low) // 4
    first = random.randrange(slots)
    for k in range(slots):  # bounded by the range
        port = low + 4 * ((first + k) % slots)
        if all(_udp_free(ip, port + i) for i in range(4)):
            _reserved.update((ip, port + i) for i in range(4))
            return port
    raise RuntimeError(f"no free media ports on {ip} in {MEDIA_PORT_RANGE}")


class SippAgent:
    """One ``sipp`` process running one scenario of ``tests/sipp`` for one call.

    Use ``async with agent:`` (start, then stop and remove the working folder) or
    :meth:`start` / :meth:`wait` / :meth:`stop` / :meth:`close`. ``wait`` and ``stop`` are
    bounded in time and always reap the process; ``describe()`` gives the command, exit
    code and the tails of SIPp's logs for assertion messages.
    """

    def __init__(
        self,
        scenario: str | Path,
        *,
        local_ip: str,
        local_port: int | None = None,
        media_port: int | None = None,
        remote: str | None = None,
        service: str | None = None,
        digits: str = "",
        pcap_options: Mapping[str, int] | None = None,
        keys: Mapping[str, str] | None = None,
        pause_ms: int = 0,
        recv_timeout_ms: int | None = None,
        timeout: float = 30.0,
        extra_args: Sequence[str] = (),
        workdir: Path | None = None,
        name: str | None = None,
    ) -> None:
        self.scenario = Path(scenario) if Path(scenario).is_absolute() else SCENARIO_DIR / scenario
        if not self.scenario.is_file():
            raise FileNotFoundError(f"no SIPp scenario {self.scenario}")
        self.name = name or self.scenario.stem
        self.local_ip = local_ip
        self._own_ports: list[tuple[str, int]] = []
        if local_port is None:
            local_port = _reserve_sip_port(local_ip)
            self._own_ports.append((local_ip, local_port))
        if media_port is None:
            media_port = _reserve_media_port(local_ip)
            self._own_ports.extend((local_ip, media_port + i) for i in range(4))
        # SIPp's UDP remote-control socket (default 0.0.0.0:8888): on local_ip as well.
        self.control_port = _reserve_sip_port(local_ip)
        self._own_ports.append((local_ip, self.control_port))
        self.local_port = local_port
        self.media_port = media_port
        self.remote = remote
        self.service = service
        self.digits = digits
        self.pcap_options = dict(pcap_options or {})
        self.keys = dict(keys or {})
        self.pause_ms = pause_ms
        self.recv_timeout_ms = recv_timeout_ms
        self.timeout = timeout
        self.extra_args = list(extra_args)
        self._own_workdir = workdir is None
        self.workdir = (workdir or Path(tempfile.mkdtemp(prefix=f"kp-sipp-{self.name}-"))).resolve()
        self.returncode: int | None = None
        self.started_at: float | None = None  # time.monotonic() of the start
        self.ended_at: float | None = None  # when wait() saw the exit
        self.killed = False  # stop() had to signal it: its exit code means nothing
        self._proc: asyncio.subprocess.Process | None = None
        self.command: list[str] = []

    def __repr__(self) -> str:
        return (
            f"SippAgent({self.name!r}, {self.local_ip}:{self.local_port}, "
            f"media {self.media_port}, rc={self.returncode})"
        )

    # --- files -------------------------------------------------------------------------

    @property
    def pcap_path(self) -> Path:
        return self.workdir / "dtmf.pcap"

    @property
    def message_log_path(self) -> Path:
        return self.workdir / "messages.log"

    @property
    def error_log_path(self) -> Path:
        return self.workdir / "errors.log"

    def _read(self, name: str) -> str:
        try:
            return (self.workdir / name).read_text(errors="replace")
        except OSError:
            return ""

    def message_log(self) -> str:
        """Every SIP message sent and received so far (``-trace_msg``)."""
        return self._read("messages.log")

    def error_log(self) -> str:
        """Unexpected messages and SIPp's errors (``-trace_err``), plus its stderr."""
        return (self._read("errors.log") + self._read("stderr.log")).strip()

    def screen(self) -> str:
        """SIPp's final statistics screen (per scenario step: messages, retransmissions,
        timeouts, unexpected messages)."""
        return self._read("screen.log").strip()

    def describe(self, lines: int = 40) -> str:
        """A summary for assertion messages: command, exit code, logs' tails."""

        def tail(text: str) -> str:
            return "\n".join(text.splitlines()[-lines:]) or "(empty)"

        code = self.returncode
        meaning = "running or not started" if code is None else EXIT_MEANINGS.get(code, "?")
        if self.killed:
            meaning += ", stopped by a signal"
        return (
            f"sipp agent {self.name} ({self.local_ip}:{self.local_port}, media "
            f"{self.media_port}, dir {self.workdir}): rc={code} ({meaning})\n"
            f"command: {' '.join(self.command)}\n"
            f"--- errors:\n{tail(self.error_log())}\n"
            f"--- screen:\n{tail(self.screen())}\n"
            f"--- messages:\n{tail(self.message_log())}"
        )

    # --- process -----------------------------------------------------------------------

    def build_command(self) -> list[str]:
        cmd = [
            sipp_binary(),
            "-sf", str(self.workdir / self.scenario.name),
            "-i", self.local_ip,
            "-p", str(self.local_port),
            "-bind_local",  # SIP socket on local_ip only
            "-mi", self.local_ip,
            "-mp", str(self.media_port),
            "-ci", self.local_ip,
            "-cp", str(self.control_port),
            "-m", "1",
            "-r", "1000",  # a UAC's first call starts after 1/rate s (default rate 10: 100 ms)
            "-d", str(self.pause_ms),  # <pause/> without milliseconds (UAS ring time)
            "-aa",  # 200 to INFO, NOTIFY, OPTIONS, UPDATE outside the scenario
            "-timeout", f"{max(1, round(self.timeout))}s",
            "-timeout_error",
            "-nostdin",
            "-trace_msg", "-message_file", str(self.message_log_path),
            "-trace_err", "-error_file", str(self.error_log_path),
            "-trace_screen", "-screen_file", str(self.workdir / "screen.log"),
        ]  # fmt: skip
        if self.recv_timeout_ms is not None:
            cmd += ["-recv_timeout", str(self.recv_timeout_ms)]
        if self.service is not None:
            cmd += ["-s", self.service]
        for key, value in self.keys.items():
            cmd += ["-key", key, value]
        cmd += self.extra_args
        if self.remote is not None:
            cmd.append(self.remote)
        return cmd

    async def start(self) -> None:
        """Write the scenario copy and the pcap, then start ``sipp`` (its own process
        group, stdin closed, output into the working folder)."""
        if self._proc is not None:
            raise RuntimeError(f"{self!r} already started")
        self.command = self.build_command()  # raises SippNotInstalled first
        self.workdir.mkdir(parents=True, exist_ok=True)
        # SIPp looks for dtmf.pcap next to the scenario: keep both in the working folder.
        shutil.copyfile(self.scenario, self.workdir / self.scenario.name)
        write_dtmf_pcap(self.pcap_path, self.digits, **self.pcap_options)
        stdout, stderr = self._open_output()
        with stdout, stderr:
            self._proc = await asyncio.create_subprocess_exec(
                *self.command,
                cwd=self.workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        await self._wait_bound()

    def _open_output(self) -> tuple[BinaryIO, BinaryIO]:
        """SIPp's stdout (screens) and stderr, as files in the working folder."""
        return (
            open(self.workdir / "screen-stdout.log", "wb"),  # closed by start()
            open(self.workdir / "stderr.log", "wb"),
        )

    async def _wait_bound(self, timeout: float = 5.0) -> None:
        """Return once sipp holds its SIP port (a UAS must listen before Asterisk dials)."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while _bindable(self.local_ip, self.local_port):  # bounded by the deadline
            if self._proc.returncode is not None:
                self._set_returncode(self._proc.returncode)
                raise RuntimeError(f"sipp {self.name} exited at start:\n{self.describe()}")
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"sipp {self.name} did not bind {self.local_ip}:{self.local_port} "
                    f"within {timeout}s:\n{self.describe()}"
                )
            await asyncio.sleep(0.01)  # polling an external process, not test sync

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def wait(self, timeout: float = 30.0) -> int:
        """SIPp's exit code (0: the call succeeded). On timeout the process is stopped
        and :class:`TimeoutError` is raised with :meth:`describe`."""
        if self._proc is None:
            raise RuntimeError(f"{self!r} not started")
        try:
            code = await asyncio.wait_for(self._proc.wait(), timeout)
        except TimeoutError:
            await self.stop()
            raise TimeoutError(
                f"sipp {self.name} still running after {timeout}s:\n{self.describe()}"
            ) from None
        self._set_returncode(code)
        return code

    async def wait_success(self, timeout: float = 30.0) -> None:
        """Wait and assert exit code 0, with the logs in the message."""
        code = await self.wait(timeout)
        assert code == 0 and not self.killed, f"sipp {self.name} failed:\n{self.describe()}"

    def _set_returncode(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self.ended_at = time.monotonic()

    async def stop(self, timeout: float = 3.0) -> int | None:
        """SIGTERM the process group, wait (bounded), SIGKILL; always reap. Returns the
        exit code (None if never started)."""
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            self.killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await asyncio.wait_for(proc.wait(), 5.0)
        assert proc.returncode is not None
        self._set_returncode(proc.returncode)
        return self.returncode

    async def close(self) -> None:
        """:meth:`stop`, release the ports and remove an own working folder."""
        try:
            await self.stop()
        finally:
            for port in self._own_ports:
                _reserved.discard(port)
            self._own_ports.clear()
            if self._own_workdir and not os.environ.get("KEYPRESS_KEEP_SIPP_LOGS"):
                shutil.rmtree(self.workdir, ignore_errors=True)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _pcap_options(delay_ms: int, digit_ms: int, gap_ms: int) -> dict[str, int]:
    return {"lead_in_ms": delay_ms, "digit_ms": digit_ms, "gap_ms": gap_ms}


def sipp_caller(
    asterisk: AsteriskServer,
    number: str,
    digits: str = "",
    *,
    delay_ms: int = 500,
    digit_ms: int = 100,
    gap_ms: int = 200,
    hangup_after_ms: int | None = None,
    local_ip: str = "127.0.0.1",
    caller_number: str = "5551234",
    caller_name: str = "SIPp caller",
    timeout: float = 30.0,
    workdir: Path | None = None,
) -> SippAgent:
    """A SIPp caller (not started) that dials ``number`` on ``asterisk`` from
    ``local_ip`` (127.0.0.1: endpoint ``caller``, context ``keypress-inbound``) and, once
    answered, waits ``delay_ms`` (sending silence) and presses ``digits`` (RFC 4733,
    ``digit_ms`` each, ``gap_ms`` apart). It then waits for Asterisk's BYE; with
    ``hangup_after_ms`` it hangs up itself that long after its last digit unless Asterisk
    hung up first. Success (exit 0) means the call was answered and ended by a BYE."""
    options = _pcap_options(delay_ms, digit_ms, gap_ms)
    recv_timeout = None
    scenario = "uac_dtmf.xml"
    if hangup_after_ms is not None:
        scenario = "uac_dtmf_hangup.xml"
        recv_timeout = pcap_duration_ms(digits, **options) + hangup_after_ms
    return SippAgent(
        scenario,
        local_ip=local_ip,
        remote=f"127.0.0.1:{asterisk.sip_port}",
        service=number,
        digits=digits,
        pcap_options=options,
        keys={"caller_number": caller_number, "caller_name": caller_name},
        recv_timeout_ms=recv_timeout,
        timeout=timeout,
        workdir=workdir,
        name=f"caller-{number}",
    )


def sipp_buyer(
    asterisk: AsteriskServer,
    ip: str = "127.0.0.2",
    mode: BuyerMode = "answer_dtmf",
    digits: str = "",
    *,
    delay_ms: int = 500,
    digit_ms: int = 100,
    gap_ms: int = 200,
    ring_ms: int = 0,
    timeout: float = 30.0,
    workdir: Path | None = None,
) -> SippAgent:
    """A SIPp buyer (not started) listening on ``ip``:<Asterisk's SIP port>, the contact of
    ``PJSIP/acme`` (127.0.0.2) or ``PJSIP/globex`` (127.0.0.3). ``answer_dtmf``: ring
    ``ring_ms``, answer, wait ``delay_ms`` (silence), press ``digits``, wait for the BYE.
    ``busy``: 486. ``noanswer``: 180 until Asterisk's CANCEL (200 + 487)."""
    if mode not in _BUYER_SCENARIOS:
        raise ValueError(f"mode must be one of {sorted(_BUYER_SCENARIOS)}, got {mode!r}")
    return SippAgent(
        _BUYER_SCENARIOS[mode],
        local_ip=ip,
        local_port=asterisk.sip_port,
        digits=digits,
        pcap_options=_pcap_options(delay_ms, digit_ms, gap_ms),
        pause_ms=ring_ms,
        timeout=timeout,
        workdir=workdir,
        name=f"buyer-{ip}-{mode}",
    )
