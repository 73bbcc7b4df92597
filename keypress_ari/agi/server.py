"""Our own FastAGI server (asyncio): accepts Asterisk's connections, reads each request with
its limits, and hands an :class:`AgiSession` to the handler it was given.

Every step is bounded: the request must arrive within ``header_timeout`` seconds and within
:data:`~keypress_ari.agi.protocol.MAX_HEADER_LINES` lines of at most ``MAX_LINE`` bytes; each
command must be answered within its timeout; a session lasts at most ``session_timeout``;
at most ``max_sessions`` run at once (more are closed at once, and counted). A client that
connects and closes, sends garbage or stalls costs its own task only (panoramisk's server
spins a core on an early EOF: measured, see the README).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from keypress_ari.agi.protocol import (
    MAX_HEADER_LINES,
    MAX_LINE,
    MAX_USAGE_LINES,
    AgiProtocolError,
    AgiRequest,
    AgiResult,
    build_request,
    parse_result_line,
    usage_continues,
)

log = structlog.get_logger("keypress.agi")


class AgiHangup(Exception):
    """The channel hung up while the script ran (Asterisk sent ``HANGUP``) or the connection
    closed: no further command can run."""


class AgiTimeout(Exception):
    """Asterisk did not answer a command in time."""


@dataclass(slots=True)
class AgiServerStats:
    sessions: int = 0         # requests handed to the handler
    refused: int = 0          # connections closed because max_sessions ran
    bad_requests: int = 0     # closed before a whole request (EOF, garbage, a limit, timeout)
    handler_errors: int = 0   # the handler raised


class AgiSession:
    """One FastAGI connection once its request is read: send commands, read answers."""

    __slots__ = ("_broken", "_command_timeout", "_reader", "_writer", "hung_up", "request")

    def __init__(self, request: AgiRequest, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, command_timeout: float) -> None:
        self.request = request
        self._reader, self._writer = reader, writer
        self._command_timeout = command_timeout
        self.hung_up = False
        self._broken = False  # an answer timed out: later lines would be out of step

    async def run(self, line: str, timeout: float | None = None) -> AgiResult:
        """Send one command line and return its answer (a ``HANGUP`` notice before the answer
        is noted and skipped: the answer, often 511, still follows)."""
        if self._broken or (self.hung_up and self._reader.at_eof()):
            raise AgiHangup("the AGI connection is closed")
        self._writer.write(line.encode("utf-8"))
        limit = timeout if timeout is not None else self._command_timeout
        try:
            return await asyncio.wait_for(self._answer(), limit)
        except TimeoutError:
            self._broken = True
            raise AgiTimeout(f"no answer to {line.split(' ', 1)[0].strip()} "
                             f"within {limit:g} s") from None

    async def _answer(self) -> AgiResult:
        for _ in range(MAX_USAGE_LINES + 4):  # a HANGUP notice, then the answer or its usage
            line = await _read_line(self._reader)
            if line is None:
                self.hung_up = True
                raise AgiHangup("the AGI connection closed before the answer")
            if line == "HANGUP":
                self.hung_up = True
                continue
            if usage_continues(line):
                return await self._usage(line)
            return parse_result_line(line)
        raise AgiProtocolError("too many lines before an answer")

    async def _usage(self, first: str) -> AgiResult:
        lines = [first[4:]]
        for _ in range(MAX_USAGE_LINES):
            line = await _read_line(self._reader)
            if line is None:
                raise AgiHangup("the AGI connection closed inside a usage answer")
            if line.startswith("520 "):
                return AgiResult(520, None, None, " ".join(lines))
            lines.append(line)
        raise AgiProtocolError(f"a 520 usage answer over {MAX_USAGE_LINES} lines")


async def _read_line(reader: asyncio.StreamReader) -> str | None:
    """One line without its end; None at EOF. A line over MAX_LINE is a protocol error."""
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raw = exc.partial  # a last line without its end, then EOF
    except asyncio.LimitOverrunError:
        raise AgiProtocolError(f"a line over {MAX_LINE} bytes") from None
    return raw.decode("utf-8", "replace").rstrip("\r\n")


async def read_request(reader: asyncio.StreamReader) -> AgiRequest:
    lines: list[str] = []
    for _ in range(MAX_HEADER_LINES + 1):
        line = await _read_line(reader)
        if line is None:
            raise AgiProtocolError(f"connection closed after {len(lines)} request lines")
        if line == "":
            if not lines:
                raise AgiProtocolError("empty AGI request")
            return build_request(lines)
        lines.append(line)
    raise AgiProtocolError(f"an AGI request over {MAX_HEADER_LINES} lines")


Handler = Callable[[AgiSession], Awaitable[None]]


class AgiServer:
    def __init__(self, handler: Handler, *, host: str = "127.0.0.1", port: int = 4573,
                 header_timeout: float = 5.0, command_timeout: float = 5.0,
                 session_timeout: float = 60.0, max_sessions: int = 256) -> None:
        self._handler = handler
        self.host, self.port = host, port
        self._header_timeout = header_timeout
        self._command_timeout = command_timeout
        self._session_timeout = session_timeout
        self._max_sessions = max_sessions
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._ended = asyncio.Condition()  # notified as sessions start and connections end
        self.stats = AgiServerStats()

    @property
    def active(self) -> int:
        return len(self._tasks)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds, checked as sessions start and connections end."""
        async with asyncio.timeout(timeout), self._ended:
            await self._ended.wait_for(predicate)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  limit=MAX_LINE)
        sock = self._server.sockets[0].getsockname()
        self.port = sock[1]
        log.info("FastAGI server listening", host=self.host, port=self.port)

    async def close(self, grace: float = 2.0) -> None:
        """Stop accepting; let the sessions in progress finish within ``grace`` seconds,
        then cancel the rest."""
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._tasks) >= self._max_sessions:
            self.stats.refused += 1
            log.warning("FastAGI connection refused: too many sessions",
                        max_sessions=self._max_sessions)
            writer.close()
            await self._notify()
            return
        self._tasks.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            await self._notify()

    async def _notify(self) -> None:
        async with self._ended:
            self._ended.notify_all()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(read_request(reader), self._header_timeout)
        except (AgiProtocolError, TimeoutError, ConnectionError) as exc:
            self.stats.bad_requests += 1
            reason = str(exc) or f"no whole request within {self._header_timeout:g} s"
            log.warning("bad FastAGI request", error=reason)
            return
        self.stats.sessions += 1
        await self._notify()
        session = AgiSession(request, reader, writer, self._command_timeout)
        try:
            await asyncio.wait_for(self._handler(session), self._session_timeout)
        except (AgiHangup, ConnectionError):
            pass
        except TimeoutError:
            self.stats.handler_errors += 1
            log.warning("FastAGI session over its time", script=request.script,
                        channel=request.channel, seconds=self._session_timeout)
        except Exception:
            self.stats.handler_errors += 1
            log.exception("FastAGI handler failed", script=request.script,
                          channel=request.channel)
