"""The FastAGI server under faults, over real sockets on 127.0.0.1: a client that closes at
once, sends garbage, an over-long line or too many lines, stalls, or floods connections
costs its own session only; commands see HANGUP notices, usage answers and timeouts.

The client here plays Asterisk's side of the protocol (fault injection); the happy path on
the real Asterisk is tests/test_agi_mode.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from keypress_ari.agi.commands import AgiCommandFailed, AgiCommands
from keypress_ari.agi.protocol import MAX_HEADER_LINES, MAX_LINE
from keypress_ari.agi.server import AgiHangup, AgiServer, AgiSession, AgiTimeout

REQUEST = (b"agi_network: yes\nagi_network_script: keypress?digit=1\n"
           b"agi_channel: PJSIP/a-1\nagi_uniqueid: 1.1\n\n")


@pytest.fixture
async def server_with() -> AsyncIterator[Callable[..., Awaitable[AgiServer]]]:
    servers: list[AgiServer] = []

    async def start(handler: Callable[[AgiSession], Awaitable[None]], **kw: float) -> AgiServer:
        server = AgiServer(handler, port=0, **kw)  # type: ignore[arg-type]
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


async def connect(server: AgiServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def nothing(session: AgiSession) -> None:
    return None


async def test_early_eof_costs_nothing(server_with: Callable[..., Awaitable[AgiServer]]) -> None:
    """panoramisk's server spins a core here; ours ends the session at once."""
    server = await server_with(nothing)
    cpu = time.process_time()
    for _ in range(50):
        _, writer = await connect(server)
        writer.close()
        await writer.wait_closed()
    await server.wait_for(lambda: server.stats.bad_requests == 50 and server.active == 0, 5)
    assert server.stats.sessions == 0
    assert time.process_time() - cpu < 2.0  # 50 closes, not a spinning loop (generous)


@pytest.mark.parametrize("payload, what", [
    (b"hello there\n\n", "garbage"),
    (b"agi_channel: X\n" + b"x" * (MAX_LINE + 10) + b"\n\n", "over-long line"),
    (b"".join(b"agi_x%d: y\n" % i for i in range(MAX_HEADER_LINES + 5)) + b"\n", "too many"),
    (b"\n", "empty request"),
])
async def test_bad_requests_are_refused(server_with: Callable[..., Awaitable[AgiServer]],
                                        payload: bytes, what: str) -> None:
    called: list[AgiSession] = []

    async def handler(session: AgiSession) -> None:
        called.append(session)

    server = await server_with(handler)
    reader, writer = await connect(server)
    writer.write(payload)
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # the server closed it
    writer.close()
    await server.wait_for(lambda: server.stats.bad_requests == 1, 5)
    assert not called, what


async def test_stalled_client_is_dropped_after_the_header_timeout(
        server_with: Callable[..., Awaitable[AgiServer]]) -> None:
    server = await server_with(nothing, header_timeout=0.2)
    reader, writer = await connect(server)
    writer.write(b"agi_network: yes\n")  # and then nothing
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert server.stats.bad_requests == 1


async def test_sessions_over_the_limit_are_closed_at_once(
        server_with: Callable[..., Awaitable[AgiServer]]) -> None:
    release = asyncio.Event()

    async def hold(session: AgiSession) -> None:
        await release.wait()

    server = await server_with(hold, max_sessions=2)
    held = []
    for _ in range(2):
        reader, writer = await connect(server)
        writer.write(REQUEST)
        held.append((reader, writer))
    await server.wait_for(lambda: server.stats.sessions == 2, 5)
    reader, writer = await connect(server)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert server.stats.refused == 1
    release.set()
    for _, w in held:
        w.close()
    await server.wait_for(lambda: server.active == 0, 5)


async def scripted(server: AgiServer, answers: list[bytes]) -> asyncio.StreamReader:
    """Connect, send the request, then answer each command line with the next answer."""
    reader, writer = await connect(server)
    writer.write(REQUEST)

    async def answer() -> None:
        for reply in answers:
            if not await reader.readline():
                return
            writer.write(reply)
        await reader.read()
        writer.close()
    asyncio.get_running_loop().create_task(answer())
    return reader


async def test_commands_read_values_and_skip_a_hangup_notice(
        server_with: Callable[..., Awaitable[AgiServer]]) -> None:
    got: list[object] = []
    done = asyncio.Event()

    async def handler(session: AgiSession) -> None:
        agi = AgiCommands(session)
        got.append(await agi.evaluate("${CHANNEL(linkedid)}"))
        got.append(await agi.variable("UNSET"))
        got.append(await agi.hangup("PJSIP/b-2"))
        got.append(session.hung_up)
        try:
            await agi.exec("Nope")
        except AgiCommandFailed as exc:
            got.append(str(exc))
        try:
            await agi.set_variable("A", "b")
        except AgiCommandFailed as exc:
            got.append(exc.result.code)
        done.set()

    server = await server_with(handler)
    await scripted(server, [
        b"200 result=1 (1.1)\n",
        b"200 result=0\n",
        b"HANGUP\n200 result=1\n",
        b"200 result=-2\n",
        b"520-Invalid command syntax.  Proper usage follows:\nUsage: SET VARIABLE\n"
        b"520 End of proper usage.\n",
    ])
    await asyncio.wait_for(done.wait(), 5)
    assert got[:4] == ["1.1", None, True, True]
    assert "EXEC Nope" in str(got[4]) and got[5] == 520


async def test_a_command_timeout_breaks_the_session(
        server_with: Callable[..., Awaitable[AgiServer]]) -> None:
    outcome: list[str] = []
    done = asyncio.Event()

    async def handler(session: AgiSession) -> None:
        agi = AgiCommands(session)
        try:
            await agi.variable("X")
        except AgiTimeout as exc:
            outcome.append(str(exc))
        try:  # a late answer would be out of step: no further command runs
            await agi.variable("Y")
        except AgiHangup:
            outcome.append("closed")
        done.set()

    server = await server_with(handler, command_timeout=0.2)
    await scripted(server, [])  # reads the command, never answers
    await asyncio.wait_for(done.wait(), 5)
    assert "within 0.2 s" in outcome[0] and outcome[1] == "closed"


async def test_handler_errors_are_contained(
        server_with: Callable[..., Awaitable[AgiServer]]) -> None:
    async def broken(session: AgiSession) -> None:
        raise RuntimeError("boom")

    server = await server_with(broken)
    for _ in range(3):
        reader, writer = await connect(server)
        writer.write(REQUEST)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
    assert server.stats.handler_errors == 3 and server.stats.sessions == 3


async def test_close_lets_a_session_finish(
        server_with: Callable[..., Awaitable[AgiServer]]) -> None:
    finished = asyncio.Event()
    started = asyncio.Event()

    async def slow(session: AgiSession) -> None:
        started.set()
        await asyncio.sleep(0.1)  # the work of a press, not synchronisation
        finished.set()

    server = await server_with(slow)
    _, writer = await connect(server)
    writer.write(REQUEST)
    await asyncio.wait_for(started.wait(), 5)
    await server.close(grace=5)
    assert finished.is_set()
    writer.close()
