"""The daemon as a service process: run until SIGINT or SIGTERM, and under systemd tell the
service manager what it is doing (READY, STATUS, the watchdog, STOPPING)."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import structlog

from keypress_ari.config import Settings
from keypress_ari.daemon import Daemon

log = structlog.get_logger("keypress.daemon")


async def run_daemon(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM. Under systemd (``$NOTIFY_SOCKET``) say READY once
    started, ping the watchdog while healthy (see keypress_ari.sdnotify) and STOPPING."""
    from keypress_ari.sdnotify import Notifier, up_within

    daemon = Daemon(settings)
    notifier = Notifier.from_env()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watchdog: asyncio.Task[None] | None = None
    try:
        notifier.status("starting")
        await daemon.start()
        stream, app = daemon.stream, daemon.ari_settings.app
        with contextlib.suppress(TimeoutError):
            if stream is not None:
                await stream.wait_connected(5.0)  # READY then means what it says, mostly
        # Healthy: this loop runs the pings, and an ARI stream (of any of the daemon's
        # Asterisk servers) is up or was < 2 min ago.
        links = daemon.links
        healthy = up_within(lambda: any(link.connected for link in links), 120.0)
        watchdog = asyncio.create_task(notifier.watchdog_loop(healthy), name="watchdog")
        numbers = len(daemon.catalog.current.numbers)
        notifier.ready(f"taking calls: app {app}, {numbers} numbers"
                       if stream is not None and stream.connected
                       else f"waiting for ARI: app {app}, {numbers} numbers")
        await stop.wait()
        notifier.stopping("stopping: finishing calls, flushing the call log")
    except Exception as exc:
        notifier.status(f"failed: {exc}")
        raise
    finally:
        log.info("stopping")
        await daemon.stop()
        if watchdog is not None:  # pings went on while stopping (it may take a while)
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
    notifier.status("stopped")
