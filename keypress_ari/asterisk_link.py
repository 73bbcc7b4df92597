"""One Asterisk server as the daemon sees it: its call core (its own ARI event stream, REST
client and dispatcher), its cluster lease, its adoption of the calls it left, its resyncs.

A daemon has one link per server (``[ari]`` and each ``[[asterisk]]`` entry). Links share
the daemon's store, catalog, blocklist, buyer limits, metrics and one call log writer; a
call and its buyer legs live on the link whose stream brought the call, so a server that
goes away touches no other server's calls. Each link carries its calls under its own owner
name (``app@host:port`` by default), which is how its calls are found again after a restart
or taken over by a peer daemon on the same server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import structlog

from keypress_ari.calls.resync import adopt_open_calls, resync
from keypress_ari.calls.takeover import carry_on
from keypress_ari.cluster import ClusterMember
from keypress_ari.config import AriSettings, ClusterSettings
from keypress_ari.core import AriEndpoint, CallCore, build_call_core
from keypress_ari.store.leases import TakenOver
from keypress_ari.store.port import CallStore

log = structlog.get_logger("keypress.link")

ADOPT_FLUSH_TIMEOUT = 15.0  # seconds the first connection waits for the journal's replay


def owner_name(ari: AriSettings, cluster_name: str = "") -> str:
    """The name a link's calls are carried under: the configured one, else app@host:port."""
    return cluster_name or f"{ari.app}@{urlsplit(ari.url).netloc}"


class AsteriskLink:
    """Build with :meth:`build`, then :meth:`start`; the daemon stops the parts in order."""

    def __init__(self, server: str, ari: AriSettings, *, name: str, pool: Any,
                 store: CallStore, cluster: ClusterSettings, primary: bool) -> None:
        self.server = server  # "default" for [ari], else the [[asterisk]] entry's name
        self.ari_settings = ari
        self.name = name
        self.store = store
        self.primary = primary  # adopts calls written before calls had owners
        self.member = ClusterMember(cluster, pool, name=name, app=ari.app, ari_url=ari.url)
        self.core: CallCore | None = None
        self.stopping: asyncio.Task[None] | None = None  # the stream stopping, once fenced
        self._adopted = False
        self.resyncs = 0  # completed (re)connections, each followed by a resync
        self._resynced = asyncio.Condition()

    def build(self, **core_args: Any) -> CallCore:
        """Build this server's call core (``build_call_core``'s arguments but the endpoint,
        the owner, the gate and the connect hook, which are the link's)."""
        a = self.ari_settings
        self.core = build_call_core(
            AriEndpoint(a.url, a.user, a.password.get_secret_value(), a.app,
                        a.request_timeout, a.reconnect_max_backoff),
            on_connect=self._on_connect, owner=self.name, gate=self.member.lease_ok,
            **core_args)
        return self.core

    @property
    def connected(self) -> bool:
        return self.core is not None and self.core.stream.connected

    @property
    def active_calls(self) -> int:
        return self.core.dispatcher.active_calls if self.core is not None else 0

    def metric_sources(self) -> tuple[Callable[[], float], Callable[[], float]]:
        """What the per-server gauges read: calls in progress, stream connected."""
        return (lambda: float(self.active_calls)), (lambda: float(self.connected))

    def start(self) -> list[asyncio.Task[None]]:
        """Start the stream (and the writer if this core owns it) and the lease loop."""
        core = self.core
        assert core is not None
        tasks = core.start()
        tasks.append(asyncio.create_task(self.member.run(
            can_take=lambda: core.stream.connected and core.dispatcher.accepting
            and not core.replaced, on_taken=self._carry_on, on_fenced=self._stand_down,
            on_renewed=core.release_held), name=f"cluster-{self.server}"))
        return tasks

    async def _on_connect(self) -> None:
        """Runs after every (re)connection, before any event is delivered: adopt the calls a
        previous run left on this server (first connection only), then resync."""
        core = self.core
        assert core is not None
        log.info("ARI events connected", app=self.ari_settings.app, server=self.server)
        if not self._adopted:
            # The journal of a run stopped while PostgreSQL was down holds the newest state
            # of its calls: let it reach PostgreSQL before reading the calls to adopt.
            calllog = core.calllog
            if calllog.backlog and not await calllog.flush(ADOPT_FLUSH_TIMEOUT):
                log.warning("adopting calls before the journal reached PostgreSQL; their "
                            "newest state may be missing", backlog=calllog.backlog)
            adopted = await adopt_open_calls(core.dispatcher, self.store,
                                             unowned=self.primary)
            self._adopted = True
            if adopted:
                log.info("adopted calls left by a previous run", calls=adopted,
                         server=self.server)
        await resync(core.dispatcher, core.ari, self.ari_settings.app)
        async with self._resynced:
            self.resyncs += 1
            self._resynced.notify_all()

    async def wait_resyncs(self, at_least: int, timeout: float) -> None:
        """Wait until this link has resynced with its Asterisk ``at_least`` times."""
        async with asyncio.timeout(timeout), self._resynced:
            await self._resynced.wait_for(lambda: self.resyncs >= at_least)

    async def _carry_on(self, taken: TakenOver) -> None:
        core = self.core
        assert core is not None
        carried = await carry_on(core.dispatcher, core.ari, self.store,
                                 self.ari_settings.app, taken.call_ids)
        log.info("carrying on a dead peer's calls", peer=taken.daemon, calls=carried,
                 server=self.server)

    def _stand_down(self) -> None:
        """Fenced: a peer carries this link's calls now; touch none of them again."""
        core = self.core
        if core is None:
            return
        core.dispatcher.accepting = False
        log.error("events dropped: their calls are a peer's", events=core.drop_held(),
                  server=self.server)
        self.stopping = asyncio.get_running_loop().create_task(core.stream.stop())

    def readiness(self) -> dict[str, Any]:
        """This server's part of ``/readyz``."""
        core = self.core
        replaced = core is not None and core.replaced
        fenced = self.member.fenced
        return {"ready": self.connected and not (replaced or fenced), "ari": self.connected,
                "app": self.ari_settings.app, "url": self.ari_settings.url,
                "app_replaced": replaced, "fenced": fenced,
                "cluster": {"name": self.name, "epoch": self.member.epoch},
                "calls": self.active_calls,
                "claims": core.claimer.counts.as_dict() if core is not None else {}}

    async def stop_taking(self) -> None:
        """Stop taking calls on this server: no new ones, the event stream closed."""
        core = self.core
        if core is None:
            return
        core.dispatcher.accepting = False
        await core.stream.stop()
        await core.claimer.close()

    async def idle(self, timeout: float) -> None:
        if self.core is not None:
            await self.core.dispatcher.idle(timeout)

