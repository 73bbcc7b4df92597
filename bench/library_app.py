"""The same workload as the daemon's throughput figure, on a published ARI library (aioari).

A minimal, single-purpose Stasis app, as a user of aioari would write it: a caller enters,
a buyer leg is created and dialled, both are bridged (``mixing,dtmf_events``); on the buyer
leg digit 3 mutes the caller (``direction=in``), digit 4 unmutes. No call log, no flows, no
filters: the least work a press can cost on that library. Each event callback starts a task
for its REST request, so presses of different calls are handled concurrently as in the
daemon (aioari itself awaits each callback before reading the next event).

Run by ``bench/run.py`` in the bench-only venv (aioari is never a dependency of the
daemon)::

    bench/.venv/bin/python -m bench.library_app --url http://127.0.0.1:PORT/

aioari loads Asterisk's swagger description at start (``/ari/api-docs/resources.json``);
the fake ARI serves Asterisk 22's files for that. It authenticates with ``?api_key=user:pass``
in every URL (the fake accepts it; a real deployment would leak the password to logs).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import aioari

from bench.app_main import app_main

APP = "keypress"


class MinimalApp:
    def __init__(self, client: Any) -> None:
        self.client = client
        self.caller_of: dict[str, str] = {}  # buyer leg -> caller channel
        self.tasks: set[asyncio.Task[Any]] = set()
        self.errors = 0

    def spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.errors += 1

    def on_stasis_start(self, event: dict[str, Any]) -> None:
        channel_id = event["channel"]["id"]
        if event.get("args") == ["buyer"]:
            caller = self.caller_of.get(channel_id, "")
            self.spawn(self.client.channels.dial(channelId=channel_id, caller=caller,
                                                 timeout=30))
            return
        buyer = f"lib-{uuid.uuid4().hex}"
        self.caller_of[buyer] = channel_id
        self.spawn(self.client.channels.create(endpoint="PJSIP/agent", app=APP,
                                               appArgs="buyer", channelId=buyer,
                                               originator=channel_id))

    def on_dial(self, event: dict[str, Any]) -> None:
        if event.get("dialstatus") == "ANSWER":
            self.spawn(self.bridge(event["peer"]["id"]))

    async def bridge(self, buyer: str) -> None:
        caller = self.caller_of[buyer]
        bridge_id = f"lib-{uuid.uuid4().hex}"
        await self.client.channels.answer(channelId=caller)
        await self.client.bridges.create(type="mixing,dtmf_events", bridgeId=bridge_id)
        await self.client.bridges.addChannel(bridgeId=bridge_id, channel=caller)
        await self.client.bridges.addChannel(bridgeId=bridge_id, channel=buyer,
                                             absorbDTMF="true")

    def on_dtmf(self, event: dict[str, Any]) -> None:
        caller = self.caller_of.get(event["channel"]["id"])
        if caller is None:
            return
        if event["digit"] == "3":
            self.spawn(self.client.channels.mute(channelId=caller, direction="in"))
        elif event["digit"] == "4":
            self.spawn(self.client.channels.unmute(channelId=caller, direction="in"))

    def on_stasis_end(self, event: dict[str, Any]) -> None:
        self.caller_of.pop(event["channel"]["id"], None)


async def run(url: str, user: str, password: str, max_seconds: float) -> None:
    client = await aioari.connect(url, user, password)
    app = MinimalApp(client)
    client.on_event("StasisStart", lambda ev: app.on_stasis_start(ev))
    client.on_event("Dial", lambda ev: app.on_dial(ev))
    client.on_event("ChannelDtmfReceived", lambda ev: app.on_dtmf(ev))
    client.on_event("StasisEnd", lambda ev: app.on_stasis_end(ev))
    try:
        await asyncio.wait_for(client.run(apps=APP), max_seconds)
    except TimeoutError:
        pass
    finally:
        with contextlib.suppress(Exception):
            await client.close()


def main() -> None:
    app_main("minimal aioari app for the benchmark", run)


if __name__ == "__main__":
    main()
