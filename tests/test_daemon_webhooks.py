"""Webhooks fired by key presses on the real Asterisk, and a webhook that survives the
daemon being killed (SIGKILL) while its receiver was down."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support.daemon import RunningDaemon
from tests.support.process import WEBHOOK_SECRET, daemon_env, free_port, spawn_daemon
from tests.test_webhooks import Receiver

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]

CATALOG = """
flow_groups:
  - name: press-one
    flows:
      - key: "2"
        disposition: not_interested
        actions:
          - webhook:
              url: "{url}"
              headers: {{X-Api-Key: abc}}
              body: {{caller: "{{{{caller_number}}}}", key: "{{{{digit}}}}",
                      disposition: "{{{{disposition}}}}", state: "{{{{caller_state}}}}",
                      missing: "{{{{no_such_token}}}}"}}
routers:
  - {{name: main, prompt: "sound:beep", press_1_timeout: 10, flow_group: press-one}}
numbers:
  - {{number: "18005550100", router: main}}
"""
SECRET = WEBHOOK_SECRET


async def test_key_press_fires_its_webhook(daemon_factory: Any, test_caller: Any) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        kp: RunningDaemon = await daemon_factory()
        await kp.load(CATALOG.format(url=receiver.url()))
        call = await test_caller.place_call("18005550100", caller_id="5551234",
                                            variables={"KEYPRESS_TOKEN_CALLER_STATE": "CA"})
        call_id = await kp.watch.call_id_for(call.remote_id)
        await kp.watch.event(call_id, "prompt_started")
        await call.press("2")
        got = await asyncio.wait_for(receiver.requests.get(), 10)
        queued = await kp.watch.event(call_id, "webhook_queued")
    finally:
        await receiver.stop()
    assert got.method == "POST" and got.path_qs == "/hook"
    assert json.loads(got.body) == {"caller": "5551234", "key": "2",
                                    "disposition": "not_interested", "state": "CA",
                                    "missing": ""}
    assert got.headers["X-Api-Key"] == "abc"
    assert got.headers["Idempotency-Key"] == queued.detail["idempotency_key"]
    expected = "sha256=" + hmac.new(b"", got.body, hashlib.sha256).hexdigest()
    assert got.headers["X-Keypress-Signature"] == expected
    assert any("no_such_token" in w for w in queued.detail["warnings"])


async def test_a_pending_webhook_survives_a_killed_daemon(
        asterisk: Any, pg_dsn: str, db: asyncpg.Pool, test_caller: Any, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there yet: deliveries fail and are retried
    async with db.acquire() as conn:
        from keypress_ari.flows.yamlio import load_catalog_yaml
        from keypress_ari.store.catalog import import_catalog
        await import_catalog(conn, load_catalog_yaml(
            CATALOG.format(url=f"http://127.0.0.1:{port}/hook"), "test.yaml"))
    env, log = daemon_env(asterisk, pg_dsn, tmp_path / "state"), tmp_path / "daemon.log"
    ari = test_caller.client
    first = await spawn_daemon(env, log, ari)
    try:
        call = await test_caller.place_call("18005550100", caller_id="5551234")
        await call.press("2")
        await call.wait_hangup(10)
        deadline = time.monotonic() + 10
        while True:  # the first delivery attempt failed (receiver down)
            attempts = await db.fetchval("SELECT max(attempts) FROM webhook_outbox")
            if attempts:
                break
            assert time.monotonic() < deadline, "no delivery attempt was made"
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        key = await db.fetchval("SELECT idempotency_key::text FROM webhook_outbox")
        assert await db.fetchval("SELECT status FROM webhook_outbox") == "pending"
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    receiver = Receiver()
    await receiver.start(port)
    second = await spawn_daemon(env, log, ari)
    try:
        got = await asyncio.wait_for(receiver.requests.get(), 15)
        assert got.headers["Idempotency-Key"] == key
        expected = "sha256=" + hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
        assert got.headers["X-Keypress-Signature"] == expected
    finally:
        second.send_signal(signal.SIGTERM)
        await asyncio.wait_for(second.wait(), 15)
        await receiver.stop()
    assert second.returncode == 0
    rows = await db.fetch("SELECT kind, detail FROM call_events WHERE kind = 'webhook_attempt'"
                          " ORDER BY at")
    outcomes = [json.loads(r["detail"])["outcome"] for r in rows]
    assert outcomes[-1] == "delivered" and "retry" in outcomes
    assert await db.fetchval("SELECT status FROM webhook_outbox") == "delivered"
