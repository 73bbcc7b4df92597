"""A minimal AMI client for the end-to-end benchmark: login, actions, events to waiters.

Asterisk stamps every event (``timestampevents = yes`` in ``asterisk/etc/manager.conf``):
``bench/e2e.py`` times a key press by the ``DTMFEnd`` and ``Hangup`` events' stamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable

AmiMessage = dict[str, str]


class AmiClient:
    """A minimal AMI client: login, actions with ActionID, events to waiters."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._responses: dict[str, asyncio.Future[AmiMessage]] = {}
        self._waiters: list[tuple[Callable[[AmiMessage], bool], asyncio.Future[AmiMessage]]] = []
        self.events: list[AmiMessage] = []

    async def connect(self, user: str, secret: str, events: str = "call,dtmf") -> None:
        reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), 5)
        self._reader = reader
        await asyncio.wait_for(reader.readline(), 5)  # the banner
        self._task = asyncio.create_task(self._read_loop(), name="ami-reader")
        reply = await self.action("Login", Username=user, Secret=secret, Events=events)
        if reply.get("Response") != "Success":
            raise RuntimeError(f"AMI login failed: {reply}")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def action(self, name: str, timeout: float = 5.0, **fields: str) -> AmiMessage:
        assert self._writer is not None
        action_id = f"kpb-{next(self._ids)}"
        future: asyncio.Future[AmiMessage] = asyncio.get_running_loop().create_future()
        self._responses[action_id] = future
        lines = [f"Action: {name}", f"ActionID: {action_id}"]
        lines += [f"{k}: {v}" for k, v in fields.items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self._writer.drain()
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._responses.pop(action_id, None)

    async def wait_event(self, predicate: Callable[[AmiMessage], bool],
                         timeout: float = 10.0) -> AmiMessage:
        for event in self.events:
            if predicate(event):
                return event
        future: asyncio.Future[AmiMessage] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiters = [(p, f) for p, f in self._waiters if f is not future]

    async def _read_loop(self) -> None:
        assert self._reader is not None
        message: AmiMessage = {}
        while True:  # ends with the connection (EOF) or cancellation
            raw = await self._reader.readline()
            if not raw:
                return
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line:
                key, _, value = line.partition(":")
                message[key.strip()] = value.strip()
                continue
            if message:
                self._dispatch(message)
            message = {}

    def _dispatch(self, message: AmiMessage) -> None:
        action_id = message.get("ActionID", "")
        if "Response" in message and action_id in self._responses:
            future = self._responses[action_id]
            if not future.done():
                future.set_result(message)
            return
        if "Event" not in message:
            return
        self.events.append(message)
        if len(self.events) > 20_000:
            del self.events[:10_000]
        for predicate, future in self._waiters:
            if not future.done() and predicate(message):
                future.set_result(message)
