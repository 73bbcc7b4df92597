"""The call modes besides Stasis, started beside the call core: fastagi (a FastAGI server
that ``Dial()`` calls' feature keys reach) and ami (AMI events in, AMI actions out). Both
share the core's call context and call log. Also the console's way to act on a live call of
any mode."""

from __future__ import annotations

import asyncio

import structlog

from keypress_ari.agi.server import AgiServer
from keypress_ari.ami.client import AmiClient
from keypress_ari.calls.agi_mode import AgiCalls
from keypress_ari.calls.ami_channel_ops import AmiChannelOps
from keypress_ari.calls.ami_mode import AmiCalls
from keypress_ari.calls.outside_ops import AriOutsideOps
from keypress_ari.config import AgiSettings, AmiSettings
from keypress_ari.core import CallCore
from keypress_ari.store.port import CallStore

log = structlog.get_logger("keypress.daemon")


async def start_agi(g: AgiSettings, core: CallCore, store: CallStore
                    ) -> tuple[AgiServer, AgiCalls, asyncio.Task[None]] | None:
    """The fastagi mode, when enabled: its server, its calls and their sweeper task."""
    if not g.enabled:
        return None
    calls = AgiCalls(core.ctx, idle_close=g.idle_close)
    adopted = await calls.adopt(store)
    server = AgiServer(calls.handle, host=g.host, port=g.port, header_timeout=g.header_timeout,
                       command_timeout=g.command_timeout, session_timeout=g.session_timeout,
                       max_sessions=g.max_sessions)
    await server.start()
    sweeper = asyncio.create_task(calls.run_sweeper(g.sweep_interval), name="agi-sweep")
    log.info("fastagi mode on", host=g.host, port=server.port, adopted=adopted)
    return server, calls, sweeper


async def start_ami(m: AmiSettings, core: CallCore, store: CallStore
                    ) -> tuple[AmiClient, AmiCalls, asyncio.Task[None]] | None:
    """The ami mode, when enabled: its AMI client, its calls and the client's task."""
    if not m.enabled:
        return None
    calls: AmiCalls | None = None

    def on_event(message: dict[str, str]) -> None:
        if calls is not None:
            calls.on_event(message)

    async def on_connect() -> None:
        if calls is not None:
            await calls.resync()

    ami = AmiClient(m.host, m.port, m.user, m.secret.get_secret_value(), on_event=on_event,
                    on_connect=on_connect, action_timeout=m.action_timeout,
                    backoff_cap=m.reconnect_max_backoff)
    calls = AmiCalls(core.ctx, ami, core.dispatcher, m.handover_context)
    adopted = await calls.adopt(store)
    runner = asyncio.create_task(ami.run(), name="ami")
    log.info("ami mode on", host=m.host, port=m.port, user=m.user, adopted=adopted)
    return ami, calls, runner


def operator_action(core: CallCore, ami: AmiClient | None, ami_calls: AmiCalls | None,
                    agi_calls: AgiCalls | None, call_id: str, action: str) -> bool:
    """A console button on a live call of any mode; False: no such live call here. A
    fastagi call between presses is acted on over AMI when configured, else over ARI."""
    if core.dispatcher.operator_action(call_id, action):
        return True
    if ami_calls is not None and ami_calls.operator_action(call_id, action):
        return True
    if agi_calls is None:
        return False
    outside = AmiChannelOps(ami) if ami is not None else AriOutsideOps(core.ari)
    return agi_calls.operator_action(call_id, action, outside)
