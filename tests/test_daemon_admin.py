"""The admin API of a running daemon on the real Asterisk: hot reload during a live call,
readiness, and metrics that count what the call did."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from keypress_ari.ari.events import StasisStart
from tests.support.buyers import TestBuyers
from tests.support.daemon import ADMIN_TOKEN, RunningDaemon
from tests.support.prom import sample

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]

CATALOG = """
flow_groups:
  - name: agent
    flows:
      - {key: "1", name: outcome, disposition: first_version}
      - {key: "2", name: mute, call_control_actions: [mute_consumer]}
routers:
  - {name: r, request_key_press: false, buyers: [acme]}
buyers:
  - {name: acme, endpoint: "Local/acme@keypress-test-buyers/n",
     forwards_to_external_agent: true, flow_group: agent}
numbers:
  - {number: "400", router: r}
"""
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}




async def test_a_flow_changed_through_the_api_applies_to_the_next_press(
        daemon_factory: Any, test_caller: Any) -> None:
    kp: RunningDaemon = await daemon_factory(admin=True)
    await kp.load(CATALOG)
    assert kp.daemon.admin is not None
    base = kp.daemon.admin.url
    buyers = TestBuyers(test_caller)
    call = await test_caller.place_call("400", wait_answer=False)
    phone = await buyers.next_leg("acme")
    await phone.answer()
    await test_caller.wait_event(StasisStart, call.local_id)
    call_id = await kp.watch.call_id_for(call.remote_id)
    await kp.watch.event(call_id, "bridged")
    version = kp.daemon.catalog.version

    async with aiohttp.ClientSession(headers=AUTH) as http:
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 200 and (await resp.json())["ari"] is True
        await phone.press("2")
        await kp.watch.event(call_id, "call_control_action", action="mute_consumer")
        # Mid-call, the operator changes what key 1 means.
        async with http.put(f"{base}/flow-groups/agent/flows/0",
                            json={"key": "1", "name": "outcome",
                                  "disposition": "second_version"}) as resp:
            assert resp.status == 200, await resp.text()
        await kp.daemon.wait_catalog(version + 1, timeout=5.0)  # NOTIFY -> reload
        await phone.press("1")
        await call.wait_hangup(10)
        disposition = await kp.watch.event(call_id, "disposition")
        assert disposition.detail["disposition"] == "second_version"
        await kp.watch.event(call_id, "call_ended")  # the daemon has closed the call

        async with http.get(f"{base}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    assert sample(text, "keypress_key_presses_total", mode="stasis", group="agent", flow="mute",
                  outcome="matched") == 1
    assert sample(text, "keypress_key_presses_total", group="agent", flow="outcome",
                  outcome="matched") == 1
    assert sample(text, "keypress_call_control_actions_total", action="mute_consumer",
                  outcome="ok") == 1
    assert sample(text, "keypress_dtmf_to_ari_seconds_count") >= 2
    assert sample(text, "keypress_calls_active") == 0


async def test_admin_api_needs_its_token(daemon_factory: Any) -> None:
    kp: RunningDaemon = await daemon_factory(admin=True)
    assert kp.daemon.admin is not None
    base = kp.daemon.admin.url
    assert base.startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/flow-groups") as resp:
            assert resp.status == 401
        async with http.get(f"{base}/healthz") as resp:
            assert resp.status == 200
