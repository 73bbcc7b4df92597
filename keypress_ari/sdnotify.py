"""A small sd_notify client: tell systemd (``Type=notify``) that we are ready, alive, stopping.

The protocol is one UNIX datagram per notification to the socket named by ``$NOTIFY_SOCKET``
(a filesystem path, or ``@name`` for an abstract socket), holding newline-separated
``KEY=VALUE`` fields: ``READY=1``, ``STATUS=...``, ``STOPPING=1``, ``WATCHDOG=1``.
Without ``$NOTIFY_SOCKET`` (not run by systemd, or in a container) every call is a no-op.

Sends are non-blocking and never raise into the daemon: a failure is logged once at warning
and the send reports ``False``.

**The watchdog.** With ``WatchdogSec=`` systemd sets ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``) and restarts the service when no ``WATCHDOG=1`` arrives within that time.
:meth:`Notifier.watchdog_loop` pings every half interval, but only while the ``healthy``
check passes:

* the pings come from a task on the daemon's event loop, so a wedged loop (a blocking call,
  a busy loop) sends none: that is the minimum meaning of healthy;
* on top of that the daemon passes a check built with :func:`up_within`: the ARI event
  stream is connected, or was less than a grace period ago (an Asterisk restart reconnects
  within seconds; minutes without the stream means no calls are taken and a fresh process
  is the remedy systemd can apply).

A database outage does not count: the call log queue retries on its own and a restart would
not bring PostgreSQL back.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

log = structlog.get_logger("keypress.sdnotify")


def socket_address(value: str) -> bytes | None:
    """The address for ``$NOTIFY_SOCKET``: a path, or ``@name`` (abstract). Else None."""
    if value.startswith("/"):
        return os.fsencode(value)
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    return None


def watchdog_interval(environ: Mapping[str, str] | None = None,
                      pid: int | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``$WATCHDOG_USEC``), or None: no watchdog.

    None also when ``$WATCHDOG_PID`` is set and names another process (the variables were
    inherited, the watchdog is not ours) or when the values are not positive integers.
    """
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner:
        try:
            if int(owner) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 2_000_000


def up_within(is_up: Callable[[], bool], grace: float,
              clock: Callable[[], float] = time.monotonic) -> Callable[[], bool]:
    """A health check: true while ``is_up()``, and for ``grace`` seconds after it was last
    seen true (counting from now, so a start gets the same grace)."""
    last_up = clock()

    def check() -> bool:
        nonlocal last_up
        now = clock()
        if is_up():
            last_up = now
            return True
        return now - last_up < grace
    return check


class Notifier:
    """Sends sd_notify messages to one socket; every method is a no-op without one."""

    def __init__(self, address: bytes | None, *, watchdog_every: float | None = None) -> None:
        self.address = address
        self.interval = watchdog_every  # seconds between pings; None: no watchdog
        self._sock: socket.socket | None = None
        self._warned = False
        self._status = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """From ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC``/``$WATCHDOG_PID``."""
        env = os.environ if environ is None else environ
        value = env.get("NOTIFY_SOCKET", "")
        address = socket_address(value) if value else None
        if value and address is None:
            log.warning("NOTIFY_SOCKET not supported (a path or @abstract name expected); "
                        "not notifying systemd", notify_socket=value)
        return cls(address, watchdog_every=watchdog_interval(env))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram. True if sent; never raises."""
        if self.address is None:
            return False
        data = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(data, self.address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("sd_notify failed; systemd may not see our state",
                            error=f"{type(exc).__name__}: {exc}",
                            message=data.decode("utf-8", "replace"))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1`` (and a ``STATUS=`` line in the same datagram)."""
        if status is None:
            return self.notify("READY=1")
        self._status = status
        return self.notify("READY=1", _status_field(status))

    def status(self, text: str) -> bool:
        """``STATUS=text``: the line ``systemctl status`` shows."""
        self._status = text
        return self.notify(_status_field(text))

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1`` (and a ``STATUS=`` line): shutting down now."""
        if status is None:
            return self.notify("STOPPING=1")
        self._status = status
        return self.notify("STOPPING=1", _status_field(status))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: still alive."""
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of ``$WATCHDOG_USEC``), None when no watchdog."""
        return self.interval

    async def watchdog_loop(self, healthy: Callable[[], bool]) -> None:
        """Ping every :meth:`watchdog_interval` while ``healthy()``; returns at once when
        there is no watchdog. A failing (or raising) check withholds the pings, so systemd
        restarts the service after ``WatchdogSec``; it is logged and shown in STATUS once,
        and the previous STATUS comes back when the check passes again. Cancel to stop."""
        interval = self.interval
        if self.address is None or interval is None:
            return
        withholding = False
        while True:
            try:
                ok = bool(healthy())
            except Exception:
                log.exception("watchdog health check raised; counting it as unhealthy")
                ok = False
            if ok:
                self.watchdog()
                if withholding:
                    log.info("watchdog health check passes again; pinging systemd")
                    self.notify(_status_field(self._status))
            elif not withholding:
                log.warning("watchdog health check failing: pings withheld, systemd will "
                            "restart the service unless it recovers",
                            interval=interval)
                self.notify(_status_field("unhealthy: watchdog pings withheld"))
            withholding = not ok
            await asyncio.sleep(interval)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _status_field(text: str) -> str:
    return "STATUS=" + " ".join(text.split())  # one line: a newline would start a new field
