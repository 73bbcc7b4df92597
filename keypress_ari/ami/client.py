"""Our own AMI client (asyncio): connect, log in, actions with ActionID and a timeout, events
to one callback, reconnect with capped backoff and jitter.

Why our own and not panoramisk: see the README's dependency section (a wrong password is
not an error there, and actions need wrapping in timeouts; our needs are ~200 lines).

Events are delivered in the order Asterisk wrote them, synchronously from the reader: the
callback must not block (the AMI mode only notes the event and queues work per call). The
socket is read only as fast as the callback returns, so a flood costs TCP backpressure on
Asterisk, not memory here. The secret is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
from collections.abc import Awaitable, Callable, Mapping

import structlog

from keypress_ari.ami.protocol import AmiMessage, AmiParser, AmiProtocolError, encode_action

log = structlog.get_logger("keypress.ami")


class AmiError(Exception):
    """An action failed (``Response: Error``), timed out, or AMI is not connected."""


class AmiLoginRefused(AmiError):
    pass


class AmiClient:
    def __init__(self, host: str, port: int, user: str, secret: str, *,
                 on_event: Callable[[AmiMessage], None],
                 on_connect: Callable[[], Awaitable[None]] | None = None,
                 events: str = "call,dtmf", action_timeout: float = 5.0,
                 connect_timeout: float = 5.0, backoff_initial: float = 0.2,
                 backoff_cap: float = 10.0, ping_interval: float = 20.0) -> None:
        self.host, self.port, self.user = host, port, user
        self._secret = secret
        self._on_event, self._on_connect = on_event, on_connect
        self._events = events
        self._action_timeout, self._connect_timeout = action_timeout, connect_timeout
        self._backoff_initial, self._backoff_cap = backoff_initial, backoff_cap
        self._ping_interval = ping_interval  # a quiet connection is checked this often
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[AmiMessage]] = {}
        self._stopping = asyncio.Event()
        self._up = asyncio.Event()
        self.connections = 0
        self.login_failures = 0
        self.last_error = ""

    def __repr__(self) -> str:  # never the secret
        return f"AmiClient({self.host}:{self.port}, user={self.user!r})"

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self._up.wait(), timeout)

    async def action(self, name: str, **fields: str) -> AmiMessage:
        """Send an action, return its response; ``Response: Error`` raises AmiError with
        Asterisk's message."""
        return await self.request(name, fields)

    async def request(self, name: str, fields: Mapping[str, str],
                      timeout: float | None = None) -> AmiMessage:
        """:meth:`action` with its fields as a mapping and its own timeout."""
        writer = self._writer
        if writer is None or (not self._up.is_set() and name != "Login"):
            raise AmiError(f"AMI not connected ({name})")
        action_id = f"kp-{next(self._ids)}"
        future: asyncio.Future[AmiMessage] = asyncio.get_running_loop().create_future()
        self._pending[action_id] = future
        try:
            writer.write(encode_action(name, action_id, fields))
            limit = timeout if timeout is not None else self._action_timeout
            try:
                reply = await asyncio.wait_for(future, limit)
            except TimeoutError:
                raise AmiError(f"AMI {name}: no response within {limit:g} s") from None
        finally:
            self._pending.pop(action_id, None)
        if reply.get("Response", "").lower() == "error":
            raise AmiError(f"AMI {name}: {reply.get('Message', 'error')}")
        return reply

    async def run(self) -> None:
        """Connect and reconnect until :meth:`stop`."""
        delay = self._backoff_initial
        while not self._stopping.is_set():
            try:
                await self._session()
                delay = self._backoff_initial  # it was up: start the backoff over
            except AmiLoginRefused as exc:
                self.login_failures += 1
                self.last_error = str(exc)
                log.error("AMI login refused: check [ami] user/secret against manager.conf",
                          user=self.user, error=str(exc))
            except (OSError, TimeoutError, AmiProtocolError, AmiError) as exc:
                self.last_error = str(exc) or type(exc).__name__
                log.warning("AMI connection failed", host=self.host, port=self.port,
                            error=self.last_error)
            finally:
                self._down()
            if self._stopping.is_set():
                return
            wait = min(delay, self._backoff_cap) * random.uniform(0.8, 1.2)
            delay = min(delay * 2, self._backoff_cap)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)

    async def stop(self) -> None:
        self._stopping.set()
        if self._writer is not None:
            self._writer.close()

    def _down(self) -> None:
        self._up.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._fail_pending("AMI connection lost")

    def _fail_pending(self, why: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(AmiError(why))
                future.exception()  # retrieved: its waiter may have gone

    async def _session(self) -> None:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), self._connect_timeout)
        self._writer = writer
        banner = await asyncio.wait_for(reader.readline(), self._connect_timeout)
        if not banner.startswith(b"Asterisk Call Manager/"):
            raise AmiProtocolError(f"not an AMI banner: {banner[:60]!r}")
        parser = AmiParser()
        reading = asyncio.create_task(self._read(reader, parser))
        reading.add_done_callback(lambda _: self._fail_pending("AMI connection lost"))
        try:
            try:
                await self.action("Login", Username=self.user, Secret=self._secret,
                                  Events=self._events)
            except AmiError as exc:
                if "lost" in str(exc) or "no response" in str(exc):
                    raise
                raise AmiLoginRefused(str(exc).removeprefix("AMI Login: ")) from None
            self.connections += 1
            self._up.set()
            log.info("AMI connected", host=self.host, port=self.port, user=self.user)
            if self._on_connect is not None:
                await self._on_connect()
            while True:  # until EOF or a protocol error; a dead peer fails its Ping
                done, _ = await asyncio.wait({reading}, timeout=self._ping_interval)
                if done:
                    await reading
                await self.action("Ping")
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading

    async def _read(self, reader: asyncio.StreamReader, parser: AmiParser) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                raise AmiError("AMI closed the connection")
            for message in parser.feed(data):
                self._dispatch(message)

    def _dispatch(self, message: AmiMessage) -> None:
        action_id = message.get("ActionID", "")
        if "Response" in message:
            future = self._pending.get(action_id)
            if future is not None and not future.done():
                future.set_result(message)
            return
        if "Event" in message:
            try:
                self._on_event(message)
            except Exception:
                log.exception("AMI event handler failed", event=message.get("Event"))
