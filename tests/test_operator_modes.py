"""The console's buttons on calls that never entered Stasis: the same control code as a key
press, logged as operator actions. An ami call is muted over AMI and held by moving it into
the Stasis app (where the unhold and the hang-up then run); a fastagi call between its
presses is hung up over ARI, and a mute (which ARI cannot do outside its app) is logged as
failed with the fix. ``Daemon.operator_action`` is what the console's buttons call."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.audio import falls_quiet, hears, hears_music
from tests.support.daemon import RunningDaemon
from tests.test_agi_mode import CATALOG as AGI_CATALOG
from tests.test_agi_mode import dial_call as agi_dial_call
from tests.test_agi_mode import opened as agi_opened
from tests.test_ami_mode import CATALOG as AMI_CATALOG
from tests.test_ami_mode import dial_call as ami_dial_call
from tests.test_ami_mode import opened as ami_opened

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]


async def test_mute_hold_unhold_and_hang_up_an_ami_call(daemon_factory: Any,
                                                       test_caller: Any) -> None:
    kp: RunningDaemon = await daemon_factory(ami=True)
    await kp.load(AMI_CATALOG)
    call, phone = await ami_dial_call(test_caller, "5551240031")
    await call.press("0")  # opens the call (a token), nothing else
    call_id = await ami_opened(kp)
    await kp.watch.event(call_id, "tokens_set", source="flow")
    caller_phone, buyer_phone = call.local_id, phone.channel_id
    assert kp.daemon.operator_action("no-such-call", "hangup") is False

    assert kp.daemon.operator_action(call_id, "mute_consumer")
    await kp.watch.event(call_id, "operator_action", action="mute_consumer")
    muted = await kp.watch.event(call_id, "call_control_action", action="mute_consumer")
    assert muted.detail["outcome"] == "ok" and muted.detail["mode"] == "ami", muted.detail
    assert not await hears(test_caller, buyer_phone, caller_phone)
    assert kp.daemon.operator_action(call_id, "unmute_consumer")
    await kp.watch.event(call_id, "call_control_action", action="unmute_consumer")
    assert await hears(test_caller, buyer_phone, caller_phone)

    assert kp.daemon.operator_action(call_id, "hold_consumer")  # needs Stasis: moved there
    await kp.watch.event(call_id, "moving_to_stasis", reason="operator hold_consumer")
    await kp.watch.event(call_id, "entered_stasis")
    held = await kp.watch.event(call_id, "call_control_action", action="hold_consumer")
    assert held.detail["outcome"] == "ok" and held.detail["mode"] == "stasis"
    assert await hears_music(test_caller, caller_phone)
    assert kp.daemon.operator_action(call_id, "unhold_consumer")  # now the Stasis mode's
    unheld = await kp.watch.event(call_id, "call_control_action", action="unhold_consumer")
    assert unheld.detail["outcome"] == "ok", [(e.kind, e.detail) for e in kp.watch.events(call_id)]
    assert await falls_quiet(test_caller, caller_phone)
    assert kp.daemon.operator_action(call_id, "hangup")
    await call.wait_hangup(10)
    await phone.wait_hangup(10)
    await kp.watch.event(call_id, "call_ended")
    _, events = await kp.stored(call_id)
    ops = [e.detail["action"] for e in events if e.kind == "operator_action"]
    assert ops == ["mute_consumer", "unmute_consumer", "hold_consumer", "unhold_consumer",
                   "hangup"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_hang_up_a_fastagi_call_between_presses_and_mute_needs_ami(
        daemon_factory: Any, test_caller: Any) -> None:
    kp: RunningDaemon = await daemon_factory(agi=True)
    await kp.load(AGI_CATALOG)
    call, phone = await agi_dial_call(test_caller, kp, caller_id="5551230031")
    await phone.press("2")  # a token: the call stays up, no AGI session open afterwards
    call_id = (await agi_opened(kp)).call_id
    await kp.watch.event(call_id, "tokens_set", source="flow")

    assert kp.daemon.operator_action(call_id, "mute_consumer")
    refused = await kp.watch.event(call_id, "call_control_action", action="mute_consumer")
    assert refused.detail["outcome"] == "failed"
    assert "give the daemon an [ami] user and secret" in refused.detail["result"]
    assert await hears(test_caller, phone.channel_id, call.local_id)  # nothing changed

    assert kp.daemon.operator_action(call_id, "hangup")
    await call.wait_hangup(10)
    await phone.wait_hangup(10)
    ended = await kp.watch.event(call_id, "call_ended")
    assert ended.detail["ended_by"] == "daemon"
    row, events = await kp.stored(call_id)
    assert row.ended_by == "daemon"
    assert [e.kind for e in events if e.kind in ("operator_action", "hangup")] == [
        "operator_action", "operator_action", "hangup"]
    assert kp.daemon.agi_calls is not None and kp.daemon.agi_calls.active_calls == 0
