"""The throughput workload at the floor cost of a key press in Python (stdlib asyncio only).

The same decisions as ``bench/library_app.py`` (a caller enters, a buyer leg is created and
dialled, both are bridged ``mixing,dtmf_events``; on the buyer leg digit 3 mutes the caller
``direction=in``, digit 4 unmutes), built as lean as Python allows, so that its presses per
CPU-second bound what any Python design can reach on the machine:

* the events websocket on a raw :class:`asyncio.Protocol`: the HTTP Upgrade written by hand
  (Basic auth), then unmasked server frames decoded in ``data_received``, ``json.loads`` of
  each text frame and a dispatch on ``event["type"]`` through a dict, no event model;
* REST over a pool of at most ``MAX_CONNECTIONS`` keep-alive HTTP/1.1 connections, each an
  :class:`asyncio.Protocol` with one request in flight; the request bytes of a call's mute
  and unmute are encoded once per call, the fixed headers once per process; the response is
  read as a status line plus a ``Content-Length`` or chunked body, nothing else. A request
  nobody needs the answer of (a press, the dial) is written and forgotten (an error status
  is counted); one that is awaited (the bridge set-up) waits on a Future. No task, timer or
  object per press beyond the event's own dict;
* no logging, no call log, no flows, no timeouts, no reconnection.

Run by ``bench/run.py`` (``--skip-floor`` leaves it out)::

    python -m bench.floor_app --url http://127.0.0.1:PORT/ [--cpu N] [--max-seconds S]
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlsplit

from bench.app_main import app_main
from bench.floor_wire import EventSocket, RestPool

APP = "keypress"


def _q(value: str) -> str:
    return quote(value, safe="")


# --- the app ------------------------------------------------------------------------------


class FloorApp:
    """The decisions of ``library_app.MinimalApp``, on pre-encoded requests."""

    def __init__(self, pool: RestPool, prefix: str, fixed_headers: bytes) -> None:
        self.pool = pool
        self.prefix = prefix  # "/ari"
        self.tail = b" HTTP/1.1\r\n" + fixed_headers  # after the request target
        # buyer leg -> (caller channel, its mute request, its unmute request)
        self.calls: dict[str, tuple[str, bytes, bytes]] = {}
        self.ids = itertools.count(1)
        self.tasks: set[asyncio.Task[None]] = set()
        self.handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "StasisStart": self.on_stasis_start,
            "Dial": self.on_dial,
            "ChannelDtmfReceived": self.on_dtmf,
            "StasisEnd": self.on_stasis_end,
        }

    def req(self, method: str, target: str) -> bytes:
        return f"{method} {self.prefix}{target}".encode("latin-1") + self.tail

    def on_event(self, event: dict[str, Any]) -> None:
        handler = self.handlers.get(event["type"])
        if handler is not None:
            handler(event)

    def on_stasis_start(self, event: dict[str, Any]) -> None:
        channel_id = event["channel"]["id"]
        if event.get("args") == ["buyer"]:
            entry = self.calls.get(channel_id)
            caller = entry[0] if entry is not None else ""
            self.pool.send(self.req(
                "POST", f"/channels/{_q(channel_id)}/dial?caller={_q(caller)}&timeout=30"))
            return
        buyer = f"floor-{os.getpid()}-{next(self.ids)}"
        path = f"/channels/{_q(channel_id)}/mute?direction=in"
        self.calls[buyer] = (channel_id, self.req("POST", path), self.req("DELETE", path))
        self.pool.send(self.req(
            "POST", f"/channels/create?endpoint=PJSIP%2Fagent&app={APP}&appArgs=buyer"
                    f"&channelId={_q(buyer)}&originator={_q(channel_id)}"))

    def on_dial(self, event: dict[str, Any]) -> None:
        if event.get("dialstatus") == "ANSWER":
            task = asyncio.get_running_loop().create_task(self.bridge(event["peer"]["id"]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def bridge(self, buyer: str) -> None:
        entry = self.calls.get(buyer)
        if entry is None:
            return
        caller = _q(entry[0])
        bridge_id = _q(f"floor-{os.getpid()}-{next(self.ids)}")
        request = self.pool.request
        await request(self.req("POST", f"/channels/{caller}/answer"))
        await request(self.req("POST", f"/bridges?type=mixing%2Cdtmf_events"
                                       f"&bridgeId={bridge_id}"))
        await request(self.req("POST", f"/bridges/{bridge_id}/addChannel?channel={caller}"))
        await request(self.req("POST", f"/bridges/{bridge_id}/addChannel?channel={_q(buyer)}"
                                       "&absorbDTMF=true"))

    def on_dtmf(self, event: dict[str, Any]) -> None:
        entry = self.calls.get(event["channel"]["id"])
        if entry is None:
            return
        digit = event["digit"]
        if digit == "3":
            self.pool.send(entry[1])
        elif digit == "4":
            self.pool.send(entry[2])

    def on_stasis_end(self, event: dict[str, Any]) -> None:
        self.calls.pop(event["channel"]["id"], None)


# --- main ----------------------------------------------------------------------------------


async def run(url: str, user: str, password: str, max_seconds: float) -> int:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    prefix = parts.path.rstrip("/") + "/ari"
    host_header = f"{host}:{port}" if parts.port else host
    auth = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    fixed = (f"Host: {host_header}\r\nAuthorization: Basic {auth}\r\n"
             "Content-Length: 0\r\n\r\n").encode("latin-1")
    pool = RestPool(host, port)
    app = FloorApp(pool, prefix, fixed)
    key = base64.b64encode(os.urandom(16))
    upgrade = (f"GET {prefix}/events?app={_q(APP)} HTTP/1.1\r\nHost: {host_header}\r\n"
               f"Authorization: Basic {auth}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key.decode('ascii')}\r\nSec-WebSocket-Version: 13\r\n"
               "\r\n").encode("latin-1")
    loop = asyncio.get_running_loop()
    transport, events = await loop.create_connection(
        lambda: EventSocket(upgrade, key, app.on_event), host, port)
    try:
        await asyncio.wait_for(events.opened, 10)
        with contextlib.suppress(TimeoutError, ConnectionError):  # ends with ARI's socket
            await asyncio.wait_for(asyncio.shield(events.closed), max_seconds)
    finally:
        transport.close()
        pool.close()
    return pool.errors


def main() -> None:
    app_main("floor-cost ARI app for the benchmark", run)


if __name__ == "__main__":
    main()
