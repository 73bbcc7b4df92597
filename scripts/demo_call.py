"""Place two demo calls into the running daemon and print their timelines.

The demo caller is its own Stasis app ("kp-demo") holding the `;1` half of a Local channel;
the `;2` half runs the shipped `keypress-inbound` dialplan, which hands it to the daemon.
Call 1 listens to the prompt, presses 5 (no flow: the daemon prompts again), then 2 (flow
"not-interested": the daemon records the disposition and hangs up). Call 2 presses 1 (flow
"ca-callers": continue routing), is bridged to buyer acme, talks a moment and hangs up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
import uuid

import asyncpg
from aiohttp import web

from keypress_ari.ari import events as ev
from keypress_ari.ari.client import AriClient
from keypress_ari.ari.errors import AriError
from keypress_ari.ari.stream import EventStream
from keypress_ari.store import log_queries as calls_store

ARI_URL = os.environ.get("KEYPRESS_ARI__URL", "http://127.0.0.1:8088/ari")
ARI_USER = os.environ.get("KEYPRESS_ARI__USER", "keypress")
ARI_PASSWORD = os.environ.get("KEYPRESS_ARI__PASSWORD", "keypress-secret")
DSN = os.environ.get("KEYPRESS_DATABASE__DSN", "postgresql://postgres@127.0.0.1:5432/keypress")
NUMBER = os.environ.get("DEMO_NUMBER", "18005550100")


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


class DemoPhone:
    def __init__(self, ari: AriClient) -> None:
        self.ari = ari
        self.events: asyncio.Queue[ev.Event] = asyncio.Queue()

    async def until(self, kind: type, channel_id: str, timeout: float = 20) -> None:
        async with asyncio.timeout(timeout):
            while True:
                e = await self.events.get()
                channel = getattr(e, "channel", None)
                if isinstance(e, kind) and channel is not None and channel.id == channel_id:
                    return

    async def call(self) -> tuple[str, str]:
        local_id = f"demo-{uuid.uuid4().hex[:8]}"
        remote_id = local_id + "-2"
        say(f"calling {NUMBER} as 5551234 (caller_state=CA)")
        await self.ari.originate(f"Local/{NUMBER}@keypress-inbound/n", app="kp-demo",
                                 caller_id="Demo caller <5551234>", channel_id=local_id,
                                 other_channel_id=remote_id,
                                 variables={"KEYPRESS_TOKEN_CALLER_STATE": "CA"})
        await self.until(ev.StasisStart, local_id)
        say("the daemon answered and plays the prompt; listening for a moment")
        await asyncio.sleep(1.5)  # demo pacing: a person listening to the prompt
        return local_id, remote_id

    async def press(self, channel_id: str, digit: str, what: str) -> None:
        say(f"pressing {digit} ({what})")
        await self.ari.send_dtmf(channel_id, digit, duration_ms=120)


async def wait_for_daemon(ari: AriClient, deadline: float) -> None:
    """The daemon is up once its Stasis app is registered with Asterisk."""
    while time.monotonic() < deadline:
        try:
            await ari.get_application("keypress")
            return
        except AriError:
            await asyncio.sleep(0.2)
    raise SystemExit("demo: the daemon's Stasis app never registered (see .state/daemon.log)")


async def timeline(conn: asyncpg.Connection, channel_id: str) -> bool:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = await calls_store.find_calls(conn, channel_id=channel_id, limit=1)
        if found and found[0].ended_at is not None:
            events = await calls_store.call_events(conn, found[0].id)
            if any(e.kind == "call_ended" for e in events):
                print()
                print(calls_store.format_timeline(found[0], events))
                print(f"\n(again: .venv/bin/keypress-ari calls show {found[0].id})\n")
                return True
        await asyncio.sleep(0.2)
    say("the call log did not show the finished call in time")
    return False


class DemoCrm:
    """A stand-in CRM on 127.0.0.1:9099 that prints the webhooks the flows send."""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 9099).start()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.text()
        say(f"CRM received {request.method} {request.path_qs} {body} "
            f"(Idempotency-Key {request.headers.get('Idempotency-Key')})")
        return web.Response(text="ok")

    async def stop(self) -> None:
        await self.runner.cleanup()


async def main() -> int:
    crm = DemoCrm()
    await crm.start()
    try:
        return await calls()
    finally:
        await crm.stop()


async def calls() -> int:
    async with AriClient(ARI_URL, ARI_USER, ARI_PASSWORD, app="kp-demo") as ari:
        await wait_for_daemon(ari, time.monotonic() + 30)
        phone = DemoPhone(ari)
        stream = EventStream(ARI_URL, ARI_USER, ARI_PASSWORD, apps="kp-demo",
                             on_event=phone.events.put_nowait)
        runner = asyncio.create_task(stream.run())
        await stream.wait_connected(10)

        say("--- call 1: not interested")
        local, first = await phone.call()
        await phone.press(local, "5", "no flow for it: expect a second prompt")
        await asyncio.sleep(1.5)
        await phone.press(local, "2", "flow not-interested: disposition, ends the call")
        await phone.until(ev.StasisEnd, local)
        say("the daemon hung up")

        say("--- call 2: press 1 to be connected")
        local, second = await phone.call()
        await phone.press(local, "1", "flow ca-callers: continue routing to buyer acme")
        await asyncio.sleep(2.0)  # demo pacing: talking to the buyer
        say("hanging up")
        await ari.hangup(local)
        await phone.until(ev.StasisEnd, local)
        await stream.stop()
        await runner

    conn = await asyncpg.connect(DSN)
    try:
        ok = await timeline(conn, first) and await timeline(conn, second)
    finally:
        await conn.close()
    return 0 if ok else 1


if __name__ == "__main__":
    from keypress_ari.logs import configure_logging

    configure_logging("warning")
    logging.disable(logging.INFO)
    sys.exit(asyncio.run(main()))
