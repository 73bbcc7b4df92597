"""The test's own caller: a Stasis app (``kp-test``) that places calls and presses keys.

How a test call works (measured on Asterisk 22): :meth:`TestCaller.place_call` originates
``Local/{number}@{context}/n`` into the ``kp-test`` app with explicit ``channelId`` (the
``;1`` half, the test's phone) and ``otherChannelId`` (the ``;2`` half, which runs
``context``; ``keypress-inbound`` hands it to the daemon with ``Stasis(keypress)``).

* The ``;2`` half reaches the daemon's StasisStart ~2 ms after the originate, still Down.
  The ``;1`` half enters ``kp-test`` only once ``;2`` is answered, so **the daemon's app
  must answer it** (ARI answer: ~1 ms; dialplan ``Answer()`` costs ~500 ms). Until then
  ``POST /dtmf`` on ``;1`` returns 409. If ``;2`` is hung up unanswered, ``place_call``
  returns a call with ``answered=False`` whose :meth:`PlacedCall.wait_hangup` resolves.
* Originate ``variables`` (e.g. ``KEYPRESS_TOKEN_X``) are set on ``;1`` and copied to
  ``;2`` by the Local channel: they are readable on ``;2`` already at its StasisStart.
  (Reading back a variable set as ``_NAME`` under that name gave nothing: the
  inheritance prefix is not part of the stored name; not explored further.)
* ``caller_id`` (``'"Name" <5551234>'`` or ``'5551234'``) becomes ``;2``'s
  ``caller.number``/``caller.name`` in StasisStart (``;2``'s ``connected`` is ``;1``'s
  caller). A ``CALLERID(num)`` originate *variable* changes ``;1``'s caller (so ``;2``'s
  ``connected``), not ``;2``'s caller.
* Because the originate subscribes ``kp-test`` to both halves, the test app also sees
  events of ``;2``: ``ChannelDtmfReceived`` on ``;2`` (~duration + 200 ms after the
  ``/dtmf`` POST), its state changes, hangup and destruction. The app holding ``;2``
  (the daemon's) gets ``StasisEnd`` for it but no ``ChannelDestroyed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from keypress_ari.ari.client import AriClient
from keypress_ari.ari.errors import AriNotFound
from keypress_ari.ari.events import (
    ChannelDestroyed,
    Event,
    StasisEnd,
    StasisStart,
    channel_id_of,
)
from keypress_ari.ari.stream import EventStream

__all__ = ["PlacedCall", "TestCaller"]

EventPredicate = Callable[[Event], bool]
E = TypeVar("E", bound=BaseModel)

_ids = itertools.count(1)


@dataclass
class PlacedCall:
    """One test call: ``local_id`` is the test's side (;1), ``remote_id`` the daemon's (;2)."""

    caller: TestCaller = field(repr=False)
    number: str
    local_id: str
    remote_id: str
    answered: bool

    async def press(self, digits: str, duration_ms: int = 100, between_ms: int = 100) -> None:
        """Send DTMF from the test phone; the daemon sees ChannelDtmfReceived on ;2."""
        await self.caller.client.send_dtmf(
            self.local_id, digits, duration_ms=duration_ms, between_ms=between_ms
        )

    async def hangup(self) -> None:
        """Hang up the test phone (a missing channel is not an error)."""
        await self.caller.hangup_quietly(self.local_id)

    async def wait_hangup(self, timeout: float = 10.0) -> Event:
        """Wait until the test phone (;1) left kp-test or was destroyed."""
        local_id = self.local_id

        def ended(event: Event) -> bool:
            return isinstance(event, StasisEnd | ChannelDestroyed) and event.channel.id == local_id

        return await self.caller.wait_for(ended, timeout=timeout)

    def events(self, remote: bool = False) -> list[Event]:
        """Events seen so far for ;1 (or ;2 with ``remote=True``)."""
        return list(
            self.caller.events_by_channel.get(self.remote_id if remote else self.local_id, [])
        )


class TestCaller:
    """A Stasis app for tests with its own websocket; collects every event it receives."""

    __test__ = False  # not a pytest test class

    def __init__(self, base_url: str, user: str, password: str, *, app: str = "kp-test") -> None:
        self.app = app
        self.client = AriClient(base_url, user, password, app=app)
        self.stream = EventStream(base_url, user, password, apps=app, on_event=self._on_event)
        self.events: list[Event] = []
        self.events_by_channel: dict[str, list[Event]] = {}
        self._waiters: list[tuple[EventPredicate, asyncio.Future[Event]]] = []
        self._task: asyncio.Task[None] | None = None
        self._prefix = f"kpt{os.getpid()}"

    async def start(self, timeout: float = 10.0) -> None:
        self._task = asyncio.create_task(self.stream.run(), name=f"TestCaller({self.app})")
        await self.stream.wait_connected(timeout)

    async def close(self) -> None:
        await self.stream.stop()
        if self._task is not None:
            await asyncio.wait_for(self._task, 5.0)
            self._task = None
        await self.client.close()
        for _, future in self._waiters:
            future.cancel()
        self._waiters.clear()

    def _on_event(self, event: Event) -> None:
        self.events.append(event)
        channel_id = channel_id_of(event)
        if channel_id is not None:
            self.events_by_channel.setdefault(channel_id, []).append(event)
        if not self._waiters:
            return
        remaining = []
        for predicate, future in self._waiters:
            if future.done():
                continue
            if predicate(event):
                future.set_result(event)
            else:
                remaining.append((predicate, future))
        self._waiters = remaining

    def mark(self) -> int:
        """A position in :attr:`events`; pass it as ``since`` to ignore older events."""
        return len(self.events)

    async def wait_for(
        self,
        predicate: EventPredicate,
        *,
        timeout: float = 10.0,
        since: int = 0,
    ) -> Event:
        """The first event at or after ``since`` matching ``predicate``, waiting if needed."""
        for event in self.events[since:]:
            if predicate(event):
                return event
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            recent = [f"{e.type}({channel_id_of(e)})" for e in self.events[-12:]]
            raise AssertionError(
                f"no matching event within {timeout}s; last events: {recent}"
            ) from None

    async def wait_event(
        self,
        kind: type[E],
        channel_id: str | None = None,
        *,
        timeout: float = 10.0,
        since: int = 0,
        **fields: Any,
    ) -> E:
        """Typed :meth:`wait_for`: an event of class ``kind`` (about ``channel_id`` if
        given, see ``channel_id_of``) whose attributes equal ``fields``."""

        def matches(event: Event) -> bool:
            return (
                isinstance(event, kind)
                and (channel_id is None or channel_id_of(event) == channel_id)
                and all(getattr(event, name) == value for name, value in fields.items())
            )

        event = await self.wait_for(matches, timeout=timeout, since=since)
        assert isinstance(event, kind)
        return event

    async def hangup_quietly(self, channel_id: str) -> None:
        with contextlib.suppress(AriNotFound):
            await self.client.hangup(channel_id)

    async def place_call(
        self,
        number: str,
        *,
        context: str = "keypress-inbound",
        caller_id: str | None = None,
        variables: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        wait_answer: bool = True,
    ) -> PlacedCall:
        """Call ``number`` in ``context`` and wait until the test phone (;1) is in kp-test.

        Returns early with ``answered=False`` if the call ends before ;2 is answered.
        """
        local_id = f"{self._prefix}-{next(_ids)}"
        remote_id = f"{local_id}-2"
        since = self.mark()
        await self.client.originate(
            f"Local/{number}@{context}/n",
            app=self.app,
            caller_id=caller_id,
            channel_id=local_id,
            other_channel_id=remote_id,
            variables=variables,
        )

        if not wait_answer:  # the daemon may not answer yet (routers without a prompt)
            return PlacedCall(caller=self, number=number, local_id=local_id,
                              remote_id=remote_id, answered=False)

        def settled(event: Event) -> bool:
            return (
                isinstance(event, StasisStart | ChannelDestroyed) and event.channel.id == local_id
            )

        first = await self.wait_for(settled, timeout=timeout, since=since)
        return PlacedCall(
            caller=self,
            number=number,
            local_id=local_id,
            remote_id=remote_id,
            answered=isinstance(first, StasisStart),
        )
