"""The ARI event websocket, kept connected forever.

:class:`EventStream` connects to ``/ari/events?app=...``, decodes each JSON text frame with
:func:`~keypress_ari.ari.events.parse_event` and hands the event to a synchronous
``on_event`` callback. Bad frames and callback errors are logged and skipped. Any drop,
refusal or error leads to a reconnect after a jittered exponential backoff; after each
(re)connection the optional ``on_connect`` coroutine runs before any event is delivered
(the daemon re-reads channel state there: ARI does not queue events for a disconnected
app). :meth:`EventStream.stop` ends :meth:`EventStream.run` promptly.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import structlog

from keypress_ari import jsoncodec
from keypress_ari.ari.auth import basic_auth_header
from keypress_ari.ari.events import Event, EventParseError, parse_event

__all__ = ["EventStream", "events_url"]

log = structlog.get_logger(__name__)

T = TypeVar("T")


def events_url(base_url: str, apps: Sequence[str]) -> str:
    """``http://h:p/ari`` -> ``ws://h:p/ari/events?app=a,b`` (``https`` -> ``wss``)."""
    parts = urlsplit(base_url.rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = "app=" + ",".join(quote(app, safe="") for app in apps)
    return urlunsplit((scheme, parts.netloc, parts.path + "/events", query, ""))


class _Stopped(Exception):
    """Internal: stop() was called while an awaitable was pending."""


class EventStream:
    """A self-healing subscription to ARI events for one or more Stasis apps.

    ``connected`` is true once the websocket is up and ``on_connect`` has finished, until
    the connection drops. Backoff between attempts starts at ``backoff_initial`` seconds,
    doubles up to ``backoff_cap``, is jittered (50-100 % of the step) and starts over once
    a connection has stayed up for ``stable_after`` seconds. ``heartbeat`` (seconds) sends
    websocket pings so that a dead peer is noticed.
    """

    def __init__(
        self,
        base_url: str,
        user: str,
        password: str,
        *,
        apps: str | Sequence[str],
        on_event: Callable[[Event], None],
        on_connect: Callable[[], Awaitable[None]] | None = None,
        on_disconnect: Callable[[], None] | None = None,
        backoff_initial: float = 0.1,
        backoff_cap: float = 5.0,
        stable_after: float = 2.0,
        heartbeat: float = 10.0,
        connect_timeout: float = 5.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        app_list = [apps] if isinstance(apps, str) else list(apps)
        if not app_list or not all(app_list):
            raise ValueError("EventStream needs at least one non-empty app name")
        self.apps = app_list
        self.url = events_url(base_url, app_list)
        self._headers = {"Authorization": basic_auth_header(user, password)}
        self._on_event = on_event
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._backoff_initial = backoff_initial
        self._backoff_cap = backoff_cap
        self._stable_after = stable_after
        self._heartbeat = heartbeat
        self._connect_timeout = connect_timeout
        self._session = session
        self._stop_event = asyncio.Event()
        self._connected_event = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._up_since: float | None = None
        self.connections = 0  # successful connections so far (for tests and metrics)
        # perf_counter() when the frame being delivered arrived (latency measurements)
        self.frame_received_at = 0.0

    def __repr__(self) -> str:
        return f"EventStream({self.url!r}, connected={self.connected})"

    @property
    def connected(self) -> bool:
        return self._connected_event.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected; raises ``TimeoutError`` after ``timeout`` seconds."""
        await asyncio.wait_for(self._connected_event.wait(), timeout)

    async def stop(self) -> None:
        """Make :meth:`run` return promptly: close the websocket, cancel any backoff."""
        self._stop_event.set()
        ws = self._ws
        if ws is not None and not ws.closed:
            await ws.close()

    async def run(self) -> None:
        """Connect, deliver events and reconnect until :meth:`stop` is called."""
        own_session = self._session is None
        session = self._session or aiohttp.ClientSession()
        delay = self._backoff_initial
        try:
            while not self._stop_event.is_set():
                self._up_since = None
                try:
                    await self._connect_and_receive(session)
                except _Stopped:
                    break
                except Exception as exc:  # every failure means: back off, reconnect
                    log.warning(
                        "ari.events.connection_failed",
                        url=self.url,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                if self._stop_event.is_set():
                    break
                up_since = self._up_since
                now = asyncio.get_running_loop().time()
                if up_since is not None and now - up_since >= self._stable_after:
                    delay = self._backoff_initial
                wait = delay * random.uniform(0.5, 1.0)
                delay = min(delay * 2, self._backoff_cap)
                log.info("ari.events.reconnecting", url=self.url, in_seconds=round(wait, 3))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), wait)
        finally:
            self._set_disconnected()
            if own_session:
                await session.close()

    async def _until_stopped(self, awaitable: Coroutine[Any, Any, T]) -> T:
        """Await ``awaitable`` unless stop() comes first (then cancel it, raise _Stopped)."""
        task = asyncio.ensure_future(awaitable)
        stopper = asyncio.ensure_future(self._stop_event.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
        if not task.done() or task.cancelled():
            # Let the cancelled task finish so nothing is left pending.
            await asyncio.gather(task, return_exceptions=True)
            raise _Stopped
        return task.result()

    async def _connect_and_receive(self, session: aiohttp.ClientSession) -> None:
        ws = await self._until_stopped(self._connect(session))
        self._ws = ws
        self._up_since = asyncio.get_running_loop().time()
        try:
            if self._stop_event.is_set():
                raise _Stopped
            self.connections += 1
            log.info("ari.events.connected", url=self.url, connection=self.connections)
            if self._on_connect is not None:
                await self._until_stopped(self._run_on_connect(self._on_connect))
            self._connected_event.set()
            await self._receive(ws)
        finally:
            self._ws = None
            self._set_disconnected()
            if not ws.closed:
                await ws.close()

    @staticmethod
    async def _run_on_connect(hook: Callable[[], Awaitable[None]]) -> None:
        await hook()

    async def _connect(self, session: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
        async with asyncio.timeout(self._connect_timeout):
            return await session.ws_connect(
                self.url,
                headers=self._headers,
                heartbeat=self._heartbeat,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2.0),
            )

    async def _receive(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        on_event = self._on_event
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                self.frame_received_at = time.perf_counter()
                event = self._decode(msg.data)
                if event is None:
                    continue
                try:
                    on_event(event)
                except Exception:
                    log.exception("ari.events.callback_failed", event_type=event.type)
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                if not self._stop_event.is_set():
                    log.warning("ari.events.closed", url=self.url, code=ws.close_code)
                return
            elif msg.type is aiohttp.WSMsgType.ERROR:
                log.warning("ari.events.error", url=self.url, error=str(ws.exception()))
                return
            else:  # binary frames: ARI never sends them
                log.warning("ari.events.garbage", reason=f"unexpected {msg.type.name} frame")

    @staticmethod
    def _decode(text: str) -> Event | None:
        try:
            data = jsoncodec.loads(text)
        except ValueError as exc:
            log.warning("ari.events.garbage", reason=f"bad JSON: {exc}", frame=text[:200])
            return None
        if not isinstance(data, dict):
            log.warning("ari.events.garbage", reason="not a JSON object", frame=text[:200])
            return None
        try:
            return parse_event(data)
        except EventParseError as exc:
            log.warning("ari.events.garbage", event_type=exc.type, reason=exc.message)
            return None

    def _set_disconnected(self) -> None:
        if not self._connected_event.is_set():
            return
        self._connected_event.clear()
        log.info("ari.events.disconnected", url=self.url)
        if self._on_disconnect is not None:
            try:
                self._on_disconnect()
            except Exception:
                log.exception("ari.events.on_disconnect_failed")
