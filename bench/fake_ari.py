"""A loopback fake ARI: a small simulated Asterisk for benchmarks (aiohttp, 127.0.0.1 only).

It serves the ARI event websocket (``/ari/events?app=...``) and answers the REST requests a
Stasis app makes, minimally but the way Asterisk does: ``answer`` 204, ``play`` a Playback
(then ``PlaybackStarted`` and, after ``prompt_ms``, ``PlaybackFinished``), an unset variable
404 "Provided variable was not found", ``channels/create`` a Channel (then its
``StasisStart``), ``dial`` 204 (then ``Dial`` ANSWER), bridges, mute, ring, hangup (then
``StasisEnd``). Events are built like Asterisk 22's (same fields and sizes).

It is also the load generator. Control endpoints (JSON), used by ``bench/inprocess.py``:

* ``POST /bench/open?calls=N&kind=prompt|bridged`` opens N calls (``StasisStart``);
* ``POST /bench/press?rate=R&count=C&kind=...`` sends C ``ChannelDtmfReceived`` frames at R/s
  (open loop), round robin over the open calls of that kind, and answers once every press
  got its first REST request (or after a timeout) with the wire-to-wire latencies: from just
  before the frame was written to the socket to the arrival of the first request about that
  call (``time.perf_counter``, CLOCK_MONOTONIC, comparable across processes);
* ``POST /bench/reset`` forgets the calls (after the app hung them up) and the counters.

A ``prompt`` press is digit 2 at the router prompt (flow: disposition, so the first request
is the caller's hangup); the hung-up call is replaced by a new one (churn: live calls stay
at N). A ``bridged`` press is digit 3 or 4 (alternating per call) on the buyer leg (flows:
``mute_consumer``/``unmute_consumer``: the first request is the caller's mute).

Run: ``python -m bench.fake_ari --port 0 --ready-file F`` (the port is written to F). It
runs on uvloop so that it is not the limit of the apps it measures.
``/ari/api-docs/*`` serves Asterisk's swagger files (for swagger-based ARI libraries) when
``--api-docs DIR`` is given.

It is the tests' fake ARI too (the one fake of the project): ``tests/test_rules_parity.py``
drives calls through it in process, ``tests/test_ari_stream.py`` injects websocket faults
with its knobs (``reject_status``, ``hang_handshake``, ``read_frames``) and
:class:`FakeAriServer` (listen, stop listening, listen again on the same port).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

APP = "keypress"
PROMPT_NUMBER = "18005550100"  # router "main": request_key_press, press 2 = disposition
BRIDGED_NUMBER = "18005550200"  # router "direct": no prompt, buyer "agent" with flows
ASTERISK_ID = "52:54:00:12:34:56"


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def channel_json(channel_id: str, name: str, number: str, caller: str, *,
                 state: str = "Ring", app_data: str = APP) -> dict[str, Any]:
    return {
        "id": channel_id,
        "name": name,
        "state": state,
        "protocol_id": f"{channel_id}@127.0.0.1",
        "caller": {"name": "Bench caller", "number": caller},
        "connected": {"name": "", "number": ""},
        "accountcode": "",
        "dialplan": {"context": "keypress-inbound", "exten": number, "priority": 1,
                     "app_name": "Stasis", "app_data": app_data},
        "creationtime": _now_iso(),
        "language": "en",
        "tenantid": "",
    }


@dataclass
class Call:
    key: str                  # the caller channel id
    kind: str                 # prompt | bridged
    number: str
    caller: str
    buyer: str | None = None  # the buyer leg, once created
    presses: int = 0
    ready: bool = False


@dataclass
class Connection:
    """One events websocket as the fake accepted it (what the client sent, when it closed)."""

    ws: web.WebSocketResponse
    headers: dict[str, str]
    query: dict[str, str]
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, text: str) -> None:
        await self.ws.send_str(text)


@dataclass
class PressRun:
    sent: dict[str, float] = field(default_factory=dict)  # call key -> frame send time
    latencies: list[float] = field(default_factory=list)
    first_sent: float = 0.0
    last_sent: float = 0.0
    last_answered: float = 0.0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    expected: int = 0


class FakeAri:
    def __init__(self, *, prompt_ms: float = 0.0, api_docs: Path | None = None) -> None:
        self.prompt_ms = prompt_ms
        self.api_docs = api_docs
        self.sockets: list[web.WebSocketResponse] = []
        self.calls: dict[str, Call] = {}        # caller channel id -> call
        self.channel_call: dict[str, str] = {}  # any channel id -> caller channel id
        self.playbacks: dict[str, str] = {}     # playback id -> channel id
        self.bridges: dict[str, list[str]] = {}
        self.ids = itertools.count(1)
        self.requests = 0
        self.run: PressRun | None = None
        self.churn = True
        self._send_lock = asyncio.Lock()
        self._outbox: deque[str] = deque()
        self._base_url = ""
        # Fault injection for the events websocket (tests/test_ari_stream.py).
        self.attempts = 0                      # handshakes seen
        self.reject_status: int | None = None  # answer the handshake with this status
        self.hang_handshake = False            # accept TCP, never answer the upgrade
        self.read_frames = True                # False: never read, so pings go unanswered
        self.connections: asyncio.Queue[Connection] = asyncio.Queue()
        self._attempted = asyncio.Event()
        self.released = asyncio.Event()        # set: hung handshakes and readers give up

    # --- the websocket -------------------------------------------------------------------

    async def events(self, request: web.Request) -> web.StreamResponse:
        self.attempts += 1
        self._attempted.set()
        if self.hang_handshake:
            await self.released.wait()
        if self.reject_status is not None:
            return web.Response(status=self.reject_status, text="go away")
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=0)
        await ws.prepare(request)
        conn = Connection(ws, dict(request.headers), dict(request.query))
        self.connections.put_nowait(conn)
        self.sockets.append(ws)
        try:
            if not self.read_frames:
                await self.released.wait()
            else:
                async for msg in ws:  # bounded by the peer: it ends when the socket closes
                    if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                        break
        finally:
            self.sockets.remove(ws)
            conn.closed.set()
        return ws

    async def next_connection(self, timeout: float = 5.0) -> Connection:
        return await asyncio.wait_for(self.connections.get(), timeout)

    async def until_attempts(self, count: int, timeout: float = 5.0) -> None:
        """Wait until the fake has seen ``count`` handshakes in total."""
        async with asyncio.timeout(timeout):
            while self.attempts < count:
                self._attempted.clear()
                await self._attempted.wait()

    async def send(self, event: dict[str, Any]) -> float:
        """Write one event frame to every subscriber; returns the time just before."""
        event.setdefault("asterisk_id", ASTERISK_ID)
        event.setdefault("application", APP)
        event.setdefault("timestamp", _now_iso())
        text = json.dumps(event)
        at = time.perf_counter()
        for ws in list(self.sockets):
            if not ws.closed:
                await ws.send_str(text)
        if event["type"] == "PlaybackFinished":  # the call now waits for a key press
            target = event["playback"]["target_uri"].removeprefix("channel:")
            call = self._call_for(target)
            if call is not None and call.kind == "prompt":
                call.ready = True
        return at

    def send_later(self, event: dict[str, Any], delay: float = 0.0) -> None:
        """Send after the current REST response went out (as Asterisk's events follow)."""
        loop = asyncio.get_running_loop()

        def fire() -> None:
            task = loop.create_task(self.send(event))
            task.add_done_callback(_ignore_result)

        loop.call_later(delay, fire) if delay > 0 else loop.call_soon(fire)

    # --- the calls -------------------------------------------------------------------------

    async def open_call(self, kind: str, *, number: str | None = None,
                        args: list[str] | None = None) -> Call:
        """A caller enters the app (``StasisStart``) on ``number`` (default: the kind's)
        with Stasis ``args`` (``k=v`` tokens)."""
        n = next(self.ids)
        key = f"bench-{os.getpid()}-{n}"
        number = number or (PROMPT_NUMBER if kind == "prompt" else BRIDGED_NUMBER)
        call = Call(key, kind, number, caller=f"555{n:07d}")
        self.calls[key] = call
        self.channel_call[key] = key
        await self.send({
            "type": "StasisStart",
            "args": list(args or []),
            "channel": channel_json(key, f"PJSIP/caller-{n:08x}", number, call.caller),
        })
        return call

    def _call_for(self, channel_id: str) -> Call | None:
        key = self.channel_call.get(channel_id)
        return None if key is None else self.calls.get(key)

    def _first_request(self, call: Call | None) -> None:
        """A REST request about ``call``: the first one after a press ends its latency."""
        run = self.run
        if run is None or call is None:
            return
        sent = run.sent.pop(call.key, None)
        if sent is not None:
            now = time.perf_counter()
            run.latencies.append(now - sent)
            run.last_answered = now
            if len(run.latencies) >= run.expected:
                run.done.set()

    # --- REST ------------------------------------------------------------------------------

    @web.middleware
    async def count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests += 1
        result: web.StreamResponse = await handler(request)
        return result

    async def channel_op(self, request: web.Request) -> web.StreamResponse:
        channel_id = request.match_info["channel_id"]
        op = request.match_info.get("op", "")
        call = self._call_for(channel_id)
        self._first_request(call)
        method = request.method
        if op == "" and method == "DELETE":  # hangup
            return self._hangup(channel_id, call)
        if op == "" and method == "GET":
            if call is None:
                return _not_found("Channel not found")
            return web.json_response(channel_json(channel_id, f"PJSIP/x-{channel_id}",
                                                  call.number, call.caller, state="Up"))
        if call is None:
            return _not_found("Channel not found")
        if op == "variable" and method == "GET":
            return _not_found("Provided variable was not found")
        if op == "play" and method == "POST":
            return self._play(request, channel_id, call)
        if op == "dial" and method == "POST":
            self._dial(channel_id, call)
        return web.Response(status=204)

    def _hangup(self, channel_id: str, call: Call | None) -> web.StreamResponse:
        if call is None:
            return _not_found("Channel not found")
        chan = channel_json(channel_id, f"PJSIP/x-{channel_id}", call.number, call.caller,
                            state="Up")
        self.send_later({"type": "StasisEnd", "channel": chan})
        self.channel_call.pop(channel_id, None)
        if channel_id == call.key:
            self.calls.pop(call.key, None)
            if call.buyer is not None:
                self.channel_call.pop(call.buyer, None)
            if self.churn and self.run is not None:
                loop = asyncio.get_running_loop()
                task = loop.create_task(self.open_call(call.kind))
                task.add_done_callback(_ignore_result)
        return web.Response(status=204)

    def _play(self, request: web.Request, channel_id: str, call: Call) -> web.StreamResponse:
        playback_id = request.query.get("playbackId") or f"pb-{next(self.ids)}"
        self.playbacks[playback_id] = channel_id
        playback = {"id": playback_id, "media_uri": request.query.get("media", ""),
                    "target_uri": f"channel:{channel_id}", "state": "queued",
                    "language": "en"}
        self.send_later({"type": "PlaybackStarted", "playback": {**playback,
                                                                 "state": "playing"}})
        self.send_later({"type": "PlaybackFinished", "playback": {**playback, "state": "done"}},
                        self.prompt_ms / 1000)
        return web.json_response(playback, status=201)

    def _dial(self, channel_id: str, call: Call) -> None:
        peer = channel_json(channel_id, f"PJSIP/agent-{channel_id[-8:]}", "agent", "",
                            state="Up", app_data=f"{APP},buyer")
        caller = channel_json(call.key, f"PJSIP/x-{call.key}", call.number, call.caller,
                              state="Up")
        self.send_later({"type": "Dial", "peer": peer, "caller": caller,
                         "dialstatus": "ANSWER", "dialstring": "agent"})

    async def create_channel(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        originator = q.get("originator", "")
        call = self._call_for(originator)
        self._first_request(call)
        if call is None:
            return _not_found("Originator channel not found")
        channel_id = q.get("channelId") or f"bench-leg-{next(self.ids)}"
        call.buyer = channel_id
        self.channel_call[channel_id] = call.key
        chan = channel_json(channel_id, f"PJSIP/agent-{channel_id[-8:]}", "agent", "",
                            state="Down", app_data=f"{APP},buyer")
        args = [a for a in q.get("appArgs", "").split(",") if a]
        self.send_later({"type": "StasisStart", "args": args, "channel": chan})
        return web.json_response(chan)

    async def playback_op(self, request: web.Request) -> web.StreamResponse:
        playback_id = request.match_info["playback_id"]
        channel_id = self.playbacks.pop(playback_id, None)
        self._first_request(None if channel_id is None else self._call_for(channel_id))
        if channel_id is None:
            return _not_found("Playback not found")
        return web.Response(status=204)

    async def bridge_op(self, request: web.Request) -> web.StreamResponse:
        bridge_id = request.match_info.get("bridge_id") or request.query.get("bridgeId", "")
        op = request.match_info.get("op", "")
        channel = request.query.get("channel", "")
        self._first_request(self._call_for(channel) if channel else None)
        if request.method == "DELETE":
            self.bridges.pop(bridge_id, None)
            return web.Response(status=204)
        if op == "addChannel":
            self.bridges.setdefault(bridge_id, []).append(channel)
            call = self._call_for(channel)
            if call is not None and call.buyer == channel:
                call.ready = True  # caller and buyer are bridged: the buyer may press
            return web.Response(status=204)
        if op == "removeChannel":
            with contextlib.suppress(ValueError):
                self.bridges.get(bridge_id, []).remove(channel)
            return web.Response(status=204)
        self.bridges.setdefault(bridge_id, [])
        return web.json_response({"id": bridge_id, "technology": "softmix",
                                  "bridge_type": "mixing", "bridge_class": "stasis",
                                  "creator": "Stasis", "name": request.query.get("name", ""),
                                  "channels": [], "creationtime": _now_iso(),
                                  "video_mode": "none"})

    async def list_channels(self, request: web.Request) -> web.StreamResponse:
        return web.json_response([])

    async def ping(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"asterisk_id": ASTERISK_ID, "ping": "pong",
                                  "timestamp": _now_iso()})

    async def api_doc(self, request: web.Request) -> web.StreamResponse:
        """Asterisk's swagger files with ``basePath`` pointing here (as Asterisk does)."""
        if self.api_docs is None:
            return _not_found("no api docs")
        name = request.match_info["name"]
        path = self.api_docs / name
        if "/" in name or not path.is_file():
            return _not_found("no such api doc")
        doc = json.loads(path.read_text())
        doc["basePath"] = f"http://{request.host}/ari"
        return web.json_response(doc)

    # --- control -----------------------------------------------------------------------------

    async def ctl_open(self, request: web.Request) -> web.StreamResponse:
        calls = int(request.query.get("calls", "1"))
        kind = request.query.get("kind", "prompt")
        started = time.perf_counter()
        for i in range(calls):
            await self.open_call(kind)
            if i % 200 == 199:
                await asyncio.sleep(0.01)  # let the app keep up with the setup traffic
        return web.json_response({"opened": calls, "seconds": time.perf_counter() - started,
                                  "open_calls": len(self.calls)})

    async def ctl_press(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        rate = float(q.get("rate", "100"))
        count = int(q.get("count", "100"))
        kind = q.get("kind", "prompt")
        timeout = float(q.get("timeout", "30"))
        run = self.run = PressRun(expected=count)
        sent = await self._press_loop(run, kind, rate, count)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.done.wait(), timeout)
        self.run = None
        return web.json_response({
            "sent": sent, "answered": len(run.latencies), "unanswered": len(run.sent),
            "latencies": run.latencies, "first_sent": run.first_sent,
            "last_sent": run.last_sent, "last_answered": run.last_answered,
            "requests": self.requests, "open_calls": len(self.calls),
        })

    async def _press_loop(self, run: PressRun, kind: str, rate: float, count: int) -> int:
        """Send ``count`` presses at ``rate``/s (open loop, 1 ms ticks), round robin over the
        open calls of ``kind``; a call with a press in flight is skipped."""
        start = time.perf_counter()
        run.first_sent = start
        sent = 0
        cursor: list[str] = []
        deadline = start + count / rate * 3 + 10  # bounded in time as well as in count
        while sent < count and time.perf_counter() < deadline:
            due = min(count, int((time.perf_counter() - start) * rate) + 1)
            refilled = False
            while sent < due:
                if not cursor:
                    if refilled:
                        break  # one full pass per tick: every call busy or not ready
                    cursor = [k for k, c in self.calls.items() if c.kind == kind][::-1]
                    refilled = True
                    if not cursor:
                        break
                call = self.calls.get(cursor.pop())
                if call is None or not call.ready or call.key in run.sent:
                    continue
                await self._press(run, call)
                sent += 1
            await asyncio.sleep(0.001)
        run.expected = sent
        if len(run.latencies) >= sent:
            run.done.set()
        return sent

    async def press(self, channel_id: str, digit: str, duration_ms: int = 100) -> float:
        """A ``ChannelDtmfReceived`` on one channel of a call (caller or buyer leg)."""
        call = self._call_for(channel_id)
        number, caller = (call.number, call.caller) if call is not None else ("", "")
        chan = channel_json(channel_id, f"PJSIP/x-{channel_id}", number, caller, state="Up")
        return await self.send({"type": "ChannelDtmfReceived", "digit": digit,
                                "duration_ms": duration_ms, "channel": chan})

    async def _press(self, run: PressRun, call: Call) -> None:
        if call.kind == "prompt":
            channel_id, digit, number = call.key, "2", call.number
        else:
            assert call.buyer is not None
            channel_id, number = call.buyer, "agent"
            digit = "3" if call.presses % 2 == 0 else "4"
        call.presses += 1
        chan = channel_json(channel_id, f"PJSIP/x-{channel_id}", number, call.caller,
                            state="Up")
        at = await self.send({"type": "ChannelDtmfReceived", "digit": digit,
                              "duration_ms": 100, "channel": chan})
        run.sent[call.key] = at
        run.last_sent = at

    async def ctl_hangup_all(self, request: web.Request) -> web.StreamResponse:
        """Every open call's caller leaves Stasis (as when callers hang up)."""
        calls = list(self.calls.values())
        self.calls.clear()
        for i, call in enumerate(calls):
            chan = channel_json(call.key, f"PJSIP/x-{call.key}", call.number, call.caller,
                                state="Up")
            await self.send({"type": "StasisEnd", "channel": chan})
            if i % 200 == 199:
                await asyncio.sleep(0.01)
        return web.json_response({"hung_up": len(calls)})

    async def ctl_reset(self, request: web.Request) -> web.StreamResponse:
        self.calls.clear()
        self.channel_call.clear()
        self.playbacks.clear()
        self.bridges.clear()
        self.requests = 0
        return web.json_response({"ok": True})

    async def ctl_stats(self, request: web.Request) -> web.StreamResponse:
        ready = sum(1 for c in self.calls.values() if c.ready)
        return web.json_response({"open_calls": len(self.calls), "ready": ready,
                                  "requests": self.requests, "sockets": len(self.sockets)})

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.count])
        r = app.router
        r.add_get("/ari/events", self.events)
        r.add_get("/ari/asterisk/ping", self.ping)
        r.add_get("/ari/api-docs/{name}", self.api_doc)
        r.add_get("/ari/channels", self.list_channels)
        r.add_post("/ari/channels/create", self.create_channel)
        r.add_route("*", "/ari/channels/{channel_id}", self.channel_op)
        r.add_route("*", "/ari/channels/{channel_id}/{op}", self.channel_op)
        r.add_route("*", "/ari/playbacks/{playback_id}", self.playback_op)
        r.add_post("/ari/bridges", self.bridge_op)
        r.add_route("*", "/ari/bridges/{bridge_id}", self.bridge_op)
        r.add_route("*", "/ari/bridges/{bridge_id}/{op}", self.bridge_op)
        r.add_post("/bench/open", self.ctl_open)
        r.add_post("/bench/press", self.ctl_press)
        r.add_post("/bench/reset", self.ctl_reset)
        r.add_post("/bench/hangup_all", self.ctl_hangup_all)
        r.add_get("/bench/stats", self.ctl_stats)
        return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class FakeAriServer:
    """A :class:`FakeAri` served in this process on a fixed loopback port, that can stop
    listening (new connections refused) and listen again on the same port."""

    def __init__(self, fake: FakeAri | None = None) -> None:
        self.fake = fake or FakeAri()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/ari"
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    async def start(self) -> None:
        self._runner = web.AppRunner(self.fake.app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await self.listen()

    async def listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()

    async def stop_listening(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def close(self) -> None:
        self.fake.released.set()
        if self._runner is not None:
            await self._runner.cleanup()


def _not_found(message: str) -> web.Response:
    return web.json_response({"message": message}, status=404)


def _ignore_result(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _write_port(path: Path, port: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.replace(path)  # whole or absent: the reader never sees a half-written port


async def serve(port: int, ready_file: Path | None, prompt_ms: float,
                api_docs: Path | None, max_seconds: float) -> None:
    fake = FakeAri(prompt_ms=prompt_ms, api_docs=api_docs)
    runner = web.AppRunner(fake.app(), access_log=None, handle_signals=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    bound = int(runner.addresses[0][1])  # the port the kernel chose for --port 0
    if ready_file is not None:
        _write_port(ready_file, bound)
    try:
        await asyncio.sleep(max_seconds)  # a forgotten fake ends by itself
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--prompt-ms", type=float, default=0.0)
    parser.add_argument("--api-docs", type=Path)
    parser.add_argument("--cpu", type=int, help="pin to this CPU")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    # On uvloop (the daemon's own dependency, in the bench venv): the fake is the measuring
    # instrument and must keep up with the fastest app it measures; on asyncio's loop it
    # used a whole core at 14,000 presses/s and became the ramp's limit.
    import uvloop

    with contextlib.suppress(KeyboardInterrupt), \
            asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(args.port, args.ready_file, args.prompt_ms, args.api_docs,
                         args.max_seconds))


if __name__ == "__main__":
    main()
