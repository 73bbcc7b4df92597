"""The daemon: settings, the store, the catalog, the webhook worker, the call core (built by
``core.build_call_core``) and the admin API; owns start/stop.

Start order: database (schema must be current) → catalog into memory (and LISTEN for
changes) → call log writer → ARI client → event stream (which registers the Stasis app).
Stop order is the reverse, so every event already received is handled and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
import uuid
from collections.abc import Coroutine
from typing import Any

import structlog

from keypress_ari import call_modes
from keypress_ari.agi.server import AgiServer
from keypress_ari.ami.client import AmiClient
from keypress_ari.ari.client import AriClient
from keypress_ari.ari.stream import EventStream
from keypress_ari.asterisk_link import AsteriskLink, owner_name
from keypress_ari.calls.agi_mode import AgiCalls
from keypress_ari.calls.ami_mode import AmiCalls
from keypress_ari.calls.blocklist import Blocklist
from keypress_ari.calls.buyer_limits import BuyerLimits
from keypress_ari.calls.context import CatalogRef
from keypress_ari.calls.dispatcher import Dispatcher
from keypress_ari.cluster import ClusterMember
from keypress_ari.config import ConfigError, Settings, extra_servers, require_ari
from keypress_ari.console import Activity, LiveCalls
from keypress_ari.core import CallCore
from keypress_ari.flows.model import Catalog
from keypress_ari.http import AdminServer, create_admin_app
from keypress_ari.metrics import DaemonMetrics
from keypress_ari.store import catalog as catalog_store
from keypress_ari.store.buyer_legs import PgBuyerLegs
from keypress_ari.store.db import available_migrations, connect_pool, too_new_message
from keypress_ari.store.journal import Journal
from keypress_ari.store.listener import NotifyListener
from keypress_ari.store.log_writer import CallLogWriter
from keypress_ari.store.outbox import Outbox
from keypress_ari.store.pg_store import PgStore
from keypress_ari.webhooks.worker import WebhookWorker

log = structlog.get_logger("keypress.daemon")

CATALOG_CHANNEL = "keypress_catalog"
BLOCKLIST_CHANNEL = "keypress_blocklist"
CATALOG_CHECK_INTERVAL = 5.0  # seconds; a missed NOTIFY is caught up this late at worst


# Full (generation 2) collections only after this many generation-1 collections (the default
# is 10). The key press path creates no reference cycles (a run of 48,000 presses and 5,000
# calls with the collector off left nothing for it to find), so a full collection frees next
# to nothing while it stops everything: 15-40 ms at 5,000-10,000 live calls, which at the
# default rate ended the throughput ramp at 10,000 presses/s (wire p99 57 ms; 2.3 ms with
# this, bench/results/profile.md). Young collections keep their default rate.
FULL_COLLECTION_EVERY = 10_000


def settle_heap() -> None:
    """Once started: what start-up allocated lives as long as the process, so it leaves
    every collection (``gc.freeze``); full collections become rare."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ari_settings = require_ari(settings)
        self.pool: Any = None
        self.store: PgStore | None = None
        self.links: list[AsteriskLink] = []  # one per Asterisk server; the first is [ari]
        self.catalog = CatalogRef(Catalog.empty())
        self.calllog: CallLogWriter | None = None
        self.blocklist = Blocklist()
        self.metrics = DaemonMetrics()
        self.admin: AdminServer | None = None
        self.agi: AgiServer | None = None       # the fastagi mode's server, when enabled
        self.agi_calls: AgiCalls | None = None
        self.ami: AmiClient | None = None       # the ami mode's client, when enabled
        self.ami_calls: AmiCalls | None = None
        self.webhooks: WebhookWorker | None = None
        self._webhooks_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.daemon_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.limits: BuyerLimits | None = None  # buyers' max_concurrency across daemons
        self.extra_servers = extra_servers(settings)  # [[asterisk]] beside the first
        self.name = owner_name(self.ari_settings, settings.cluster.name)
        self.listener: NotifyListener | None = None  # LISTEN for catalog/blocklist changes
        self.catalog_notifies = 0  # NOTIFYs received for the catalog
        self._reload_lock = asyncio.Lock()
        self._catalog_changed = asyncio.Condition()

    # The first server's parts, by the names the daemon had before it had several servers.
    @property
    def _primary(self) -> AsteriskLink | None:
        return self.links[0] if self.links else None

    @property
    def core(self) -> CallCore | None:
        return self.links[0].core if self.links else None

    @property
    def ari(self) -> AriClient | None:
        return self.core.ari if self.core is not None else None

    @property
    def stream(self) -> EventStream | None:
        return self.core.stream if self.core is not None else None

    @property
    def dispatcher(self) -> Dispatcher | None:
        return self.core.dispatcher if self.core is not None else None

    @property
    def member(self) -> ClusterMember | None:
        return self.links[0].member if self.links else None

    @property
    def resyncs(self) -> int:
        return self.links[0].resyncs if self.links else 0

    async def wait_resyncs(self, at_least: int, timeout: float) -> None:
        """Wait until the first server has been resynced with ``at_least`` times."""
        assert self.links
        await self.links[0].wait_resyncs(at_least, timeout)

    def link(self, server: str) -> AsteriskLink:
        """The link to the server of that name ("default": ``[ari]``)."""
        for link in self.links:
            if link.server == server:
                return link
        raise KeyError(server)

    async def start(self) -> None:
        s, a = self.settings, self.ari_settings
        self.pool = await connect_pool(s.database.dsn.get_secret_value(),
                                       max_size=s.database.pool_size)
        self.store = PgStore(self.pool)
        await self._check_schema()
        self.links = [AsteriskLink(
            "default" if s.ari is not None else s.asterisk[0].name, a, name=self.name,
            pool=self.pool, store=self.store, cluster=s.cluster, primary=True)]
        self.links += [AsteriskLink(e.name, e, name=owner_name(e), pool=self.pool,
                                    store=self.store, cluster=s.cluster, primary=False)
                       for e in self.extra_servers]
        for link in self.links:
            await link.member.join()
        await self.reload_catalog()
        await self.blocklist.load(self.store)
        self.listener = NotifyListener(
            s.database.dsn.get_secret_value(),
            {CATALOG_CHANNEL: self._on_catalog_notify,
             BLOCKLIST_CHANNEL: self._on_blocklist_notify},
            on_reconnect=self._caught_up_after_listen)
        await self.listener.start()
        self._tasks.append(asyncio.create_task(self.listener.run(), name="listen"))
        self._tasks.append(asyncio.create_task(self._check_catalog_periodically(),
                                               name="catalog-check"))
        lease = s.calls.buyer_lease
        limits = self.limits = BuyerLimits(PgBuyerLegs(self.pool, self.daemon_id, lease),
                                           timeout=s.calls.buyer_reserve_timeout)
        self._tasks.append(asyncio.create_task(limits.run(lease / 3), name="buyer-leases"))
        listener = self.listener
        self.metrics.set_shared_db_sources(lambda: limits.fallbacks,
                                           lambda: listener.reconnects)
        ws = s.webhooks
        webhooks = self.webhooks = WebhookWorker(
            Outbox(self.pool), secret=ws.secret.get_secret_value(), timeout=ws.timeout,
            max_attempts=ws.max_attempts, initial_backoff=ws.initial_backoff,
            max_backoff=ws.max_backoff, poll_interval=ws.poll_interval,
            concurrency=ws.concurrency)
        self.metrics.set_webhook_source(lambda: webhooks.counts)
        shared = dict(store=self.store, catalog=self.catalog, settings=s.calls,
                      metrics=self.metrics, blocklist=self.blocklist, limits=limits,
                      broadcast=s.broadcast)
        core = self.links[0].build(
            journal=Journal(s.journal.directory, s.journal.max_bytes),
            on_outbox=webhooks.wake, **shared)
        for link in self.links[1:]:  # one call log writer for all: one journal, one order
            link.build(calllog=core.calllog, **shared)
        links = self.links
        self.metrics.set_calls_active(lambda: sum(link.active_calls for link in links))
        self.metrics.set_server_sources(
            {link.server: link.metric_sources() for link in links})
        self.calllog = core.calllog
        try:  # what the journal holds (PostgreSQL was away, or a crash) is written first
            await core.calllog.recover()
        except (OSError, RuntimeError) as exc:
            raise ConfigError(f"journal.state_dir: {exc}") from None
        calllog = core.calllog
        self.metrics.set_call_log_source(lambda: calllog.backlog,
                                         lambda: float(calllog.journal_full),
                                         lambda: calllog.journal_full_episodes,
                                         rejected=lambda: calllog.rejected)
        self._webhooks_task = asyncio.create_task(webhooks.run(), name="webhooks")
        for link in self.links:
            self._tasks.extend(link.start())
        await self._start_agi(core)
        await self._start_ami(core)
        await self._start_admin()
        settle_heap()
        log.info("daemon started", app=a.app, ari=a.url, daemon_id=self.daemon_id,
                 servers=[link.server for link in self.links],
                 flow_groups=len(self.catalog.current.flow_groups),
                 numbers=len(self.catalog.current.numbers))

    async def _start_agi(self, core: CallCore) -> None:
        assert self.store is not None
        started = await call_modes.start_agi(self.settings.agi, core, self.store)
        if started is not None:
            self.agi, self.agi_calls, sweeper = started
            self._tasks.append(sweeper)

    async def _start_ami(self, core: CallCore) -> None:
        assert self.store is not None
        started = await call_modes.start_ami(self.settings.ami, core, self.store)
        if started is not None:
            self.ami, self.ami_calls, runner = started
            self._tasks.append(runner)

    def operator_action(self, call_id: str, action: str) -> bool:
        """A console button on a live call of any mode on any server; False: no such live
        call here. (The fastagi and ami modes work with the first server.)"""
        assert self.core is not None
        for link in self.links[1:]:
            if link.core is not None and link.core.dispatcher.operator_action(call_id, action):
                return True
        return call_modes.operator_action(self.core, self.ami, self.ami_calls, self.agi_calls,
                                          call_id, action)

    async def _start_admin(self) -> None:
        admin = self.settings.admin
        token = admin.token.get_secret_value()
        if not token:
            log.info("admin API off: no admin token set (KEYPRESS_ADMIN__TOKEN)")
            return
        live, activity = LiveCalls(), Activity()
        assert self.calllog is not None and self.core is not None
        self.calllog.add_listener(live.observe_op)
        self.calllog.add_listener(activity.observe_op)
        app = create_admin_app(pool=self.pool, token=token, ready=self.readiness,
                               metrics=self.metrics, live=live,
                               act_on_call=self.operator_action,
                               activity=activity)
        self.admin = AdminServer(app, admin.host, admin.port)
        await self.admin.start()
        log.info("admin API listening", url=self.admin.url)

    async def readiness(self) -> dict[str, Any]:
        """Ready: PostgreSQL answers and every Asterisk server's event stream is connected
        (not replaced, not fenced). ``servers`` has each server's own state; the top-level
        ``ari``/``app_replaced``/``fenced``/``cluster``/``claims`` are the first server's."""
        db_ok = self.store is not None and await self.store.ping(2.0)
        servers = {link.server: link.readiness() for link in self.links}
        first = servers[self.links[0].server] if self.links else {
            "ari": False, "app_replaced": False, "fenced": False, "claims": {},
            "cluster": {"name": self.name, "epoch": 0}}
        ready = db_ok and bool(servers) and all(v["ready"] for v in servers.values())
        return {"ready": ready, "ari": first["ari"], "database": db_ok,
                "app_replaced": first["app_replaced"], "fenced": first["fenced"],
                "cluster": first["cluster"], "claims": first["claims"], "servers": servers,
                "catalog_version": self.catalog.version,
                "call_log_backlog": self.calllog.backlog if self.calllog else 0,
                "journal_backlog": self.calllog.journal_backlog if self.calllog else 0,
                "journal_full": self.calllog.journal_full if self.calllog else False}

    async def _check_schema(self) -> None:
        assert self.store is not None
        latest = max(m.number for m in available_migrations())
        current = await self.store.schema_version()
        if current is None or current < latest:
            raise ConfigError(f"database schema is at {current or 'nothing'}, needs {latest}: "
                              "run `keypress-ari db migrate`")
        if current > latest:
            raise ConfigError(too_new_message(current, "unknown to this version", latest))

    async def reload_catalog(self) -> None:
        """Load the catalog from PostgreSQL and swap it in whole."""
        async with self._reload_lock, self.pool.acquire() as conn:
            version = await catalog_store.catalog_version(conn)
            if version == self.catalog.version and self.catalog.version:
                return  # the periodic check: nothing changed
            version, self.catalog.current = await catalog_store.load_catalog_with_version(conn)
            self.catalog.version = version
        log.info("catalog loaded", version=version)
        async with self._catalog_changed:
            self._catalog_changed.notify_all()

    async def wait_catalog(self, at_least: int, timeout: float) -> None:
        """Wait until the catalog in force has version ``at_least`` or later."""
        async with asyncio.timeout(timeout), self._catalog_changed:
            await self._catalog_changed.wait_for(lambda: self.catalog.version >= at_least)

    def _on_catalog_notify(self, *_: object) -> None:
        self.catalog_notifies += 1
        self._spawn(self._reload_safely())

    async def _caught_up_after_listen(self) -> None:
        """The LISTEN is back after a lost connection: read what changed meanwhile."""
        await self._reload_safely()
        await self._reload_blocklist()

    def _on_blocklist_notify(self, *_: object) -> None:
        self._spawn(self._reload_blocklist())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.append(task)
        task.add_done_callback(lambda t: self._tasks.remove(t) if t in self._tasks else None)

    async def _reload_safely(self) -> None:
        try:
            await self.reload_catalog()
        except Exception as exc:
            log.error("catalog reload failed; keeping the previous one", error=str(exc))

    async def _reload_blocklist(self) -> None:
        try:
            assert self.store is not None
            await self.blocklist.load(self.store)
        except Exception as exc:
            log.error("blocklist reload failed; keeping the previous one", error=str(exc))

    async def _check_catalog_periodically(self) -> None:
        """Catch a NOTIFY missed while the listening connection was down."""
        while True:
            await asyncio.sleep(CATALOG_CHECK_INTERVAL)
            await self._reload_safely()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop taking calls, finish handling what arrived, flush the call log, close."""
        if self.admin is not None:
            await self.admin.stop()
        if self.agi is not None:
            await self.agi.close()  # a press being handled is cut: its rows are staged
        if self.ami is not None:
            await self.ami.stop()
            if self.ami_calls is not None:
                await self.ami_calls.idle(grace / 4)
        await asyncio.gather(*(link.stop_taking() for link in self.links))
        await asyncio.gather(*(link.idle(grace / 2) for link in self.links))
        if self.calllog is not None:
            self.calllog.close()
            if not await self.calllog.flush(grace / 2):
                log.error("call log not fully written at stop", backlog=self.calllog.backlog)
        if self.webhooks is not None:
            try:  # due deliveries get their chance; PostgreSQL may be down (then: pending)
                await self.webhooks.drain(min(2.0, grace / 4))
            except Exception as exc:
                log.warning("webhook outbox not drained at stop", error=str(exc))
            await self.webhooks.stop(grace=1.0)  # the rest stay pending for the next start
            if self._webhooks_task is not None:
                await asyncio.gather(self._webhooks_task, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for link in self.links:
            if link.core is not None:
                await link.core.ari.close()
        if self.listener is not None:
            await self.listener.close()
        if self.limits is not None:  # this daemon's legs stop counting now, not at expiry
            with contextlib.suppress(Exception):
                await self.limits.settle(1.0)
                await self.limits.renew()
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), 5)
            except Exception as exc:  # PostgreSQL unreachable: the journal holds the log
                log.warning("database pool not closed cleanly", error=str(exc))
                self.pool.terminate()
        log.info("daemon stopped")
