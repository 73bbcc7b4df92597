"""The daemon as a separate process (for kill/restart tests) and a bounded condition poll."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from keypress_ari.ari.client import AriClient
from keypress_ari.ari.errors import AriError

WEBHOOK_SECRET = "hook-secret"


async def until(condition: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy (returned); fail after
    ``timeout`` seconds. A condition wait with a deadline, for state no event announces."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon_env(asterisk: Any, dsn: str, state_dir: Path) -> dict[str, str]:
    """Environment for ``python -m keypress_ari run`` against the test Asterisk and ``dsn``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPRESS_")}
    env.update({
        "KEYPRESS_CONFIG": "/nonexistent/keypress-ari.toml",
        "KEYPRESS_ARI__URL": asterisk.base_url,
        "KEYPRESS_ARI__USER": asterisk.ari_user,
        "KEYPRESS_ARI__PASSWORD": asterisk.ari_password,
        "KEYPRESS_DATABASE__DSN": dsn,
        "KEYPRESS_WEBHOOKS__SECRET": WEBHOOK_SECRET,
        "KEYPRESS_WEBHOOKS__INITIAL_BACKOFF": "0.2",
        "KEYPRESS_WEBHOOKS__MAX_BACKOFF": "0.5",
        "KEYPRESS_WEBHOOKS__POLL_INTERVAL": "0.2",
        "KEYPRESS_WEBHOOKS__TIMEOUT": "1",
        "KEYPRESS_LOG__FORMAT": "json",
        "KEYPRESS_JOURNAL__STATE_DIR": str(state_dir),
    })
    return env


async def spawn_daemon(env: dict[str, str], log: Path,
                       ari: AriClient) -> asyncio.subprocess.Process:
    """Start the daemon; return once its Stasis app is registered with Asterisk."""
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "keypress_ari", "run", env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out)

    async def registered() -> bool:
        if proc.returncode is not None:
            tail = await asyncio.to_thread(log.read_text)
            raise AssertionError("daemon exited: " + tail[-2000:])
        try:
            await ari.get_application(env.get("KEYPRESS_ARI__APP", "keypress"))
        except AriError:
            return False
        return True

    try:
        await until(registered, 15, "the daemon registered its Stasis app")
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return proc
