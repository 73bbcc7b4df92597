"""A full SIP call through the daemon: a SIPp caller presses 1 (RFC 4733) at the router
prompt, the daemon dials PJSIP/acme, a SIPp buyer on 127.0.0.2 answers and presses 9, a flow
that applies a disposition and ends the call; both SIPp scenarios see the BYE and succeed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keypress_ari.calllog.ops import CallEvent
from tests.support.daemon import RunningDaemon
from tests.support.sipp import sipp_buyer, sipp_caller

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]

CATALOG = """
flow_groups:
  - name: press-one
    flows:
      - {key: "1", continue_routing: true}
  - name: agent
    flows:
      - {key: "9", name: sale, disposition: sale}
routers:
  - {name: main, prompt: "sound:beep", press_1_timeout: 10, flow_group: press-one,
     buyers: [acme]}
buyers:
  - {name: acme, endpoint: PJSIP/acme, ring_timeout: 10, forwards_to_external_agent: true,
     flow_group: agent}
numbers:
  - {number: "18005550100", router: main}
"""


async def test_sip_caller_and_sip_buyer_press_keys(daemon: RunningDaemon, asterisk: Any) -> None:
    await daemon.load(CATALOG)
    # Entering the context starts each agent (the buyer first, so it listens when dialled).
    async with sipp_buyer(asterisk, "127.0.0.2", "answer_dtmf", "9", delay_ms=500) as buyer, \
            sipp_caller(asterisk, "18005550100", "1", delay_ms=800) as caller:
        started = await daemon.watch.wait_for(
            lambda op: getattr(op, "kind", None) == "call_started", timeout=15)
        assert isinstance(started, CallEvent) and started.call_id is not None
        call_id = started.call_id
        await daemon.watch.event(call_id, "bridged", buyer="acme", timeout=20)
        await daemon.watch.event(call_id, "call_ended", timeout=20)
        await asyncio.gather(caller.wait_success(20), buyer.wait_success(20))
    row, events = await daemon.stored(call_id)
    presses = [(e.leg, e.digit, e.flow) for e in events if e.kind == "key_press"]
    assert presses == [("caller", "1", "press-one/key 1 #1"), ("buyer", "9", "agent/sale")]
    assert row.caller_number == "5551234"
    assert row.disposition == "sale" and row.ended_by == "daemon"
    assert daemon.daemon.ari is not None
    assert await daemon.daemon.ari.list_channels() == []
