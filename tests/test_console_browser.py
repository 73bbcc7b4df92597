"""The operator's console in a real headless Chromium (Debian's chromium + chromedriver,
driven by Selenium from a worker thread, the daemon on this test's event loop): log in,
watch a real call on the test Asterisk appear in live calls with its key, hang it up from
the page, read its timeline (the press, the operator action), dry-run a key, search the
call log. Sessions and CSRF are checked over plain HTTP. Screenshots of each page land in
``tests/artifacts/console/`` (git-ignored) for a reviewer."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec

from tests.support.audio import hears, hears_music
from tests.support.browser import Browser, log_in
from tests.support.buyers import TestBuyers
from tests.support.daemon import ADMIN_TOKEN, RunningDaemon

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]



async def test_log_in_watch_a_call_hang_it_up_read_its_timeline(
        console: tuple[RunningDaemon, Browser], test_caller: Any) -> None:
    kp, browser = console
    await browser.open("/console/")  # no session: the login page
    await browser.wait(ec.presence_of_element_located((By.ID, "token")))
    await browser.fill("token", "not-the-token")
    await browser.submit("main button[type=submit]")
    error = await browser.wait(ec.presence_of_element_located((By.ID, "login-error")))
    assert "not the admin token" in await browser.run(lambda d: error.text)
    await browser.shot("login-refused")
    await log_in(browser)
    await browser.shot("dashboard")

    await browser.open("/console/live")
    call = await test_caller.place_call("18005550601")
    call_id = await kp.watch.call_id_for(call.remote_id)
    await kp.watch.event(call_id, "prompt_started")
    row = await browser.wait(ec.presence_of_element_located((By.ID, f"call-{call_id}")))
    await call.press("3")  # no flow for 3: the caller is prompted again, the call stays
    await kp.watch.event(call_id, "key_press", digit="3")
    await browser.wait(ec.text_to_be_present_in_element(
        (By.CSS_SELECTOR, f"#call-{call_id} [data-f=last_key]"), "3 (caller)"))
    assert "18005550601" in await browser.run(lambda d: row.text)
    await browser.shot("live-calls")
    await browser.submit(f"#call-{call_id} .act-hangup")  # hang up, from the page
    operator = await kp.watch.event(call_id, "operator_action", action="hangup")
    assert operator.detail["by"] == "console"
    await call.wait_hangup(10)
    await kp.watch.event(call_id, "call_ended")
    await browser.wait(ec.invisibility_of_element_located((By.ID, f"call-{call_id}")))

    assert kp.daemon.calllog is not None and await kp.daemon.calllog.flush(10)
    await browser.open(f"/console/calls/{call_id}")
    timeline = await browser.wait(ec.presence_of_element_located((By.ID, "timeline")))
    text = await browser.run(lambda d: timeline.text)
    assert "key_press" in text and "no_match" in text and "operator_action" in text
    await browser.shot("call-timeline")
    await browser.submit("#timeline a")  # replay the press in the dry run
    result = await browser.wait(ec.presence_of_element_located((By.ID, "result")))
    assert "outcome: no_match" in await browser.run(lambda d: result.text)
    await browser.fill("digit", "2")  # the same call, the key a flow has
    await browser.submit("main button[type=submit]")
    await browser.wait(ec.text_to_be_present_in_element((By.ID, "result"),
                                                        "matched: prompt/tag"))
    await browser.shot("dry-run")

    await browser.open("/console/calls?number=18005550601")
    await browser.wait(ec.presence_of_element_located(
        (By.CSS_SELECTOR, f"a[href='/console/calls/{call_id}']")))
    await browser.shot("call-log")
    await browser.open("/console/")  # the dashboard's last hour has the press
    await browser.wait(ec.presence_of_element_located((By.CSS_SELECTOR, "#chart-no_match .bar")))
    await browser.shot("dashboard-hour")


async def test_pages_and_forms_need_the_session_and_its_csrf_token(daemon_factory: Any) -> None:
    kp: RunningDaemon = await daemon_factory(admin=True)
    assert kp.daemon.admin is not None
    base = kp.daemon.admin.url
    jar = aiohttp.CookieJar(unsafe=True)  # 127.0.0.1 cookies
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(f"{base}/console/calls", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/console/login"
        async with http.post(f"{base}/console/live/x/hangup", data={"csrf": "x"}) as resp:
            assert resp.status == 403  # no session
        async with http.post(f"{base}/console/login", data={"token": ADMIN_TOKEN},
                             allow_redirects=False) as resp:
            assert resp.status == 303
            cookie = resp.cookies["kp_console"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
        async with http.get(f"{base}/console/calls") as resp:
            assert resp.status == 200 and "Call log" in await resp.text()
        async with http.post(f"{base}/console/live/x/hangup", data={"csrf": "wrong"}) as resp:
            assert resp.status == 403  # a session, but not its CSRF token
        async with http.get(f"{base}/calls") as resp:
            assert resp.status == 401  # the JSON API still wants its bearer token
    forged = {"kp_console": f"{cookie.value.split('.')[0]}.forged.00"}
    async with aiohttp.ClientSession(cookies=forged) as http, http.get(
            f"{base}/console/", allow_redirects=False) as resp:
        assert resp.status == 303  # a forged cookie is no session


NEW_GROUP = """flow_groups:
  - name: console-made
    flows:
      - key: "1"
        name: ca-only
        filters: [{token: caller_state, op: "==", value: CA}]
        disposition: sale_ca
      - {key: no_key_press, name: silent, disposition: no_response}
routers:
  - {name: r, request_key_press: true, prompt: "sound:beep", press_1_timeout: 60,
     flow_group: console-made}
"""


async def test_edit_the_catalog_bad_value_save_and_a_concurrent_edit(
        console: tuple[RunningDaemon, Browser], db: Any, test_caller: Any) -> None:
    kp, browser = console
    await log_in(browser)
    await browser.open("/console/catalog")
    await browser.wait(ec.presence_of_element_located((By.ID, "yaml")))
    before = await db.fetchval("SELECT version FROM catalog_state")
    # a flow that mixes continue routing with a disposition: refused, next to the field
    await browser.fill("yaml", NEW_GROUP.replace("disposition: sale_ca",
                                                 "disposition: sale_ca\n        "
                                                 "continue_routing: true"))
    await browser.submit("#preview-button")
    error = await browser.wait(ec.presence_of_element_located((By.ID, "yaml-error")))
    message = await browser.run(lambda d: error.text)
    assert "console: flow_groups[0] (console-made).flows[0] (ca-only)" in message, message
    await browser.shot("catalog-error")
    assert await db.fetchval("SELECT version FROM catalog_state") == before  # nothing written

    await browser.fill("yaml", NEW_GROUP)
    await browser.submit("#preview-button")
    preview = await browser.wait(ec.presence_of_element_located((By.ID, "preview")))
    text = await browser.run(lambda d: preview.text)
    assert "new flow group console-made" in text and "changed router r" in text
    await browser.submit("#save-button")
    await browser.wait(ec.presence_of_element_located((By.ID, "saved")))
    await kp.daemon.wait_catalog(before + 1, timeout=5.0)  # the running daemon has it
    audit = await browser.run(lambda d: d.find_element(By.ID, "audit").text)
    assert "catalog saved" in audit and "new flow group console-made" in audit
    await browser.shot("catalog-saved")

    # a real call now gets the console's flow: caller_state is CA -> sale_ca
    call = await test_caller.place_call("18005550601", variables={
        "KEYPRESS_TOKEN_CALLER_STATE": "CA"})
    call_id = await kp.watch.call_id_for(call.remote_id)
    await kp.watch.event(call_id, "prompt_started")
    await call.press("1")
    await kp.watch.event(call_id, "disposition", disposition="sale_ca")

    # two operators: both opened this version; the first saves, the second is refused
    await browser.open("/console/catalog")
    await browser.wait(ec.presence_of_element_located((By.ID, "yaml")))
    second = await asyncio.to_thread(Browser, browser.base)
    try:
        await log_in(second)
        await second.open("/console/catalog")
        await second.wait(ec.presence_of_element_located((By.ID, "yaml")))
        await browser.fill("yaml", NEW_GROUP.replace("sale_ca", "sale_first"))
        await browser.submit("#save-button")
        await browser.wait(ec.presence_of_element_located((By.ID, "saved")))
        await second.fill("yaml", NEW_GROUP.replace("sale_ca", "sale_second"))
        await second.submit("#save-button")
        refused = await second.wait(ec.presence_of_element_located((By.ID, "yaml-error")))
        assert "changed since you opened it" in await second.run(lambda d: refused.text)
        await second.shot("catalog-conflict")
    finally:
        await asyncio.to_thread(second.close)
    flow = await db.fetchval("SELECT count(*) FROM flows WHERE disposition = 'sale_first'")
    assert flow == 1
    assert await db.fetchval(
        "SELECT count(*) FROM flows WHERE disposition = 'sale_second'") == 0


async def test_mute_and_hold_buttons_act_on_a_bridged_call(
        console: tuple[RunningDaemon, Browser], test_caller: Any) -> None:
    """The buttons run the same control code as a flow's action: proven by what the
    parties hear (TALK_DETECT), and logged as operator actions."""
    kp, browser = console
    await log_in(browser)
    await browser.open("/console/live")
    call = await test_caller.place_call("18005550602", wait_answer=False)
    phone = await TestBuyers(test_caller).next_leg("acme")
    await phone.answer()
    call_id = await kp.watch.call_id_for(call.remote_id)
    await kp.watch.event(call_id, "bridged", buyer="acme")
    await browser.wait(ec.text_to_be_present_in_element(
        (By.CSS_SELECTOR, f"#call-{call_id} [data-f=buyer]"), "acme"))
    caller_phone, buyer_phone = call.local_id, phone.channel_id
    assert await hears(test_caller, buyer_phone, caller_phone)
    await browser.submit(f"#call-{call_id} .act-mute_consumer")
    muted = await kp.watch.event(call_id, "call_control_action", action="mute_consumer")
    assert muted.detail["outcome"] == "ok" and muted.flow == "operator (console)"
    assert not await hears(test_caller, buyer_phone, caller_phone)
    await browser.wait(ec.presence_of_element_located((By.ID, f"call-{call_id}")))
    await browser.submit(f"#call-{call_id} .act-unmute_consumer")
    await kp.watch.event(call_id, "call_control_action", action="unmute_consumer")
    await browser.wait(ec.presence_of_element_located((By.ID, f"call-{call_id}")))
    await browser.submit(f"#call-{call_id} .act-hold_consumer")
    await kp.watch.event(call_id, "call_control_action", action="hold_consumer")
    assert await hears_music(test_caller, caller_phone)
    await browser.shot("live-held")
    ops = [e.detail["action"] for e in kp.watch.events(call_id) if e.kind == "operator_action"]
    assert ops == ["mute_consumer", "unmute_consumer", "hold_consumer"]
    await call.hangup()
    await kp.watch.event(call_id, "call_ended")
    _, stored = await kp.stored(call_id)  # all in PostgreSQL, in order
    assert [e.seq for e in stored] == list(range(1, len(stored) + 1))
    assert [e.detail["action"] for e in stored if e.kind == "operator_action"] == ops
