"""The call core, wired once: the ARI client and event stream, the dispatcher and its calls'
shared context, the call log writer. The daemon (``daemon.py``) and the in-process benchmark
(``bench/inprocess.py``) both build it here, so what is measured is what runs.

Every hook is passed to a constructor (none is set afterwards): the stream's frame time is
the dispatcher's arrival clock, its connection state the calls' ``is_connected``, the ARI
client times each key press's first request, the writer wakes the webhook worker.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import structlog

from keypress_ari.ari.client import AriClient
from keypress_ari.ari.events import ApplicationReplaced, CallBroadcast
from keypress_ari.ari.stream import EventStream
from keypress_ari.calls.blocklist import Blocklist
from keypress_ari.calls.buyer_limits import BuyerLimits
from keypress_ari.calls.claims import Claimer
from keypress_ari.calls.context import CallContext, CatalogRef
from keypress_ari.calls.dispatcher import Dispatcher
from keypress_ari.calls.timing import DtmfLatency
from keypress_ari.config import BroadcastSettings, CallSettings
from keypress_ari.metrics import DaemonMetrics
from keypress_ari.store.journal import Journal
from keypress_ari.store.log_writer import CallLogWriter
from keypress_ari.store.port import LogStore


@dataclass(frozen=True, slots=True)
class AriEndpoint:
    url: str
    user: str
    password: str
    app: str
    request_timeout: float = 5.0
    reconnect_max_backoff: float = 5.0


log = structlog.get_logger("keypress.core")
MAX_HELD = 100_000  # events held while the cluster lease is in doubt (then the oldest go)


@dataclass(slots=True)
class CallCore:
    ari: AriClient
    stream: EventStream
    dispatcher: Dispatcher
    ctx: CallContext
    calllog: CallLogWriter
    claimer: Claimer
    owns_calllog: bool = True  # False: another core's writer (one daemon, several servers)
    replaced: bool = False  # another websocket took the app name: this stream stopped
    stopping: asyncio.Task[None] | None = None
    held: deque[object] = field(default_factory=lambda: deque(maxlen=MAX_HELD))  # events, timers

    def release_held(self) -> None:
        """The lease holds again: deliver the events held meanwhile, in order."""
        while self.held:
            self.dispatcher.on_event(self.held.popleft())

    def drop_held(self) -> int:
        """Fenced: the held events are about calls a peer carries now."""
        dropped = len(self.held)
        self.held.clear()
        return dropped

    def start(self) -> list[asyncio.Task[None]]:
        """Start the writer and the stream (the stream connects and reconnects by itself)."""
        tasks = [asyncio.create_task(self.stream.run(), name="ari-stream")]
        if self.owns_calllog:
            tasks.insert(0, asyncio.create_task(self.calllog.run(), name="calllog"))
        return tasks


def build_call_core(
    endpoint: AriEndpoint,
    *,
    store: LogStore,
    catalog: CatalogRef,
    settings: CallSettings,
    metrics: DaemonMetrics,
    blocklist: Blocklist | None = None,
    limits: BuyerLimits | None = None,
    journal: Journal | None = None,
    on_outbox: Callable[[], None] | None = None,
    on_connect: Callable[[], Awaitable[None]] | None = None,
    on_dtmf_latency: Callable[[float], None] | None = None,
    broadcast: BroadcastSettings | None = None,
    owner: str | None = None,
    gate: Callable[[], bool] | None = None,
    calllog: CallLogWriter | None = None,
) -> CallCore:
    """Build (not start) the call core. ``on_dtmf_latency`` gets the seconds from a DTMF
    event's arrival to the first ARI request it led to (default: the metrics histogram).
    ``calllog``: share that writer (a core for one more Asterisk server of the daemon)."""
    owns_calllog = calllog is None
    if calllog is None:
        calllog = CallLogWriter(store, batch_size=settings.log_batch_size, journal=journal,
                                on_outbox=on_outbox)
        calllog.add_listener(metrics.observe_op)
    latency = DtmfLatency(on_dtmf_latency or metrics.observe_dtmf_to_ari)
    ari = AriClient(endpoint.url, endpoint.user, endpoint.password, app=endpoint.app,
                    timeout=endpoint.request_timeout, on_request=latency.on_request)
    stream: EventStream | None = None  # bound below; the hooks read it when called

    def connected() -> bool:
        return stream is not None and stream.connected

    def frame_time() -> float:
        return stream.frame_received_at if stream is not None else 0.0

    ctx = CallContext(ari, calllog, catalog, settings, app=endpoint.app,
                      blocklist=blocklist if blocklist is not None else Blocklist(),
                      limits=limits if limits is not None else BuyerLimits(),
                      is_connected=connected, owner=owner)
    dispatcher = Dispatcher(ctx, arrival_clock=frame_time)
    claimer = Claimer(ari, endpoint.app, broadcast or BroadcastSettings(),
                      live_calls=lambda: dispatcher.active_calls,
                      accepting=lambda: dispatcher.accepting,
                      on_outcome=lambda outcome: metrics.claims.labels(outcome=outcome).inc())
    core: CallCore | None = None

    def on_event(event: object) -> None:
        assert core is not None
        if core.held or (gate is not None and not gate()):
            if not core.held:
                log.warning("cluster lease in doubt (paused past it?): holding events until "
                            "the next renewal", app=endpoint.app)
            core.held.append(event)  # the lease may be lost: wait for the next renewal
        elif isinstance(event, CallBroadcast):
            claimer.on_broadcast(event)
        elif isinstance(event, ApplicationReplaced):
            core.replaced = True
            log.error("another websocket registered this daemon's Stasis app name: it gets "
                      "the app's calls from now on; this daemon stops its event stream "
                      "(give every daemon its own [ari] app)", app=endpoint.app)
            core.stopping = asyncio.get_running_loop().create_task(core.stream.stop())
        else:
            dispatcher.on_event(event)

    stream = EventStream(endpoint.url, endpoint.user, endpoint.password, apps=endpoint.app,
                         on_event=on_event, on_connect=on_connect,
                         backoff_cap=endpoint.reconnect_max_backoff)
    if owns_calllog:
        metrics.set_calls_active(lambda: dispatcher.active_calls)
    core = CallCore(ari, stream, dispatcher, ctx, calllog, claimer, owns_calllog)
    dispatcher.inbox = on_event  # the calls' own timers wait behind the lease gate too
    return core
