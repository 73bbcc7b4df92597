"""The console's per-field editors in a real headless Chromium against the test Asterisk:
make a flow group (a filtered flow and a no-key-press flow) in the form, watch "continue
call routing" clear and disable the fields it excludes, see a bad value's message under its
field with nothing written, assign the group to a router in the router form, place a real
call and press the key, and refuse the second of two edits of one flow group while an edit
of another group goes through. Screenshots land in ``tests/artifacts/console/``."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select

from tests.support.browser import Browser, log_in
from tests.support.daemon import ADMIN_TOKEN, RunningDaemon

pytestmark = [pytest.mark.asterisk, pytest.mark.pg]


async def choose(browser: Browser, field: str, value: str) -> None:
    await browser.run(lambda d: Select(d.find_element(By.ID, field)).select_by_visible_text(
        value))


async def element(browser: Browser, field: str) -> Any:
    return await browser.wait(ec.presence_of_element_located((By.ID, field)))


async def text_of(browser: Browser, field: str) -> str:
    found = await element(browser, field)
    return str(await browser.run(lambda d: found.text))


async def prop(browser: Browser, field: str, name: str) -> Any:
    return await browser.run(lambda d: d.find_element(By.ID, field).get_property(name))


async def test_make_a_flow_group_in_the_form_and_a_call_uses_it(
        console: tuple[RunningDaemon, Browser], db: Any, test_caller: Any) -> None:
    kp, browser = console
    await log_in(browser)
    await browser.open("/console/catalog")
    await browser.submit("#new-flow_groups")
    await element(browser, "flows[0].key")
    await browser.fill("name", "form-made")
    await choose(browser, "flows[0].key", "1")
    await browser.fill("flows[0].filters[0].token", "caller_state")
    await browser.fill("flows[0].filters[0].value", "CA")
    await browser.fill("flows[0].disposition", "sale form")  # a space: not a disposition
    await browser.submit("#rows-button")  # a blank flow and blank rows; nothing saved
    await element(browser, "flows[1].key")
    assert await prop(browser, "flows[0].filters[0].token", "value") == "caller_state"
    await choose(browser, "flows[1].key", "no_key_press")
    await browser.fill("flows[1].disposition", "no_press")
    await browser.fill("flows[1].call_control_actions[0].reason", "x")

    # continue routing excludes a disposition and call control actions: cleared, disabled
    await browser.click("#flows\\[1\\]\\.continue_routing")
    assert await prop(browser, "flows[1].disposition", "disabled") is True
    assert await prop(browser, "flows[1].disposition", "value") == ""
    assert await prop(browser, "flows[1].call_control_actions[0].reason", "value") == ""
    assert await prop(browser, "flows[0].disposition", "disabled") is False  # other flow
    await browser.shot("editor-continue-routing")
    await browser.click("#flows\\[1\\]\\.continue_routing")
    assert await prop(browser, "flows[1].disposition", "disabled") is False
    await browser.fill("flows[1].disposition", "no_press")

    before = await db.fetchval("SELECT version FROM catalog_state")
    await browser.submit("#save-button")
    message = await text_of(browser, "flows[0].disposition-error")
    assert "disposition" in message, message
    assert await prop(browser, "flows[0].disposition", "value") == "sale form"  # kept
    await browser.shot("editor-field-error")
    assert await db.fetchval("SELECT version FROM catalog_state") == before
    assert await db.fetchval("SELECT count(*) FROM flow_groups WHERE name = 'form-made'") == 0

    await browser.fill("flows[0].disposition", "sale_form")
    await browser.submit("#save-button")
    assert await text_of(browser, "saved") == "saved"
    await kp.daemon.wait_catalog(before + 1, timeout=5.0)
    stored = await db.fetch("""SELECT f.key, f.disposition, f.filters::text AS filters
        FROM flows f JOIN flow_groups g ON g.id = f.flow_group_id
        WHERE g.name = 'form-made' ORDER BY f.position""")
    assert [(r["key"], r["disposition"]) for r in stored] == [("1", "sale_form"),
                                                              ("no_key_press", "no_press")]
    assert "caller_state" in stored[0]["filters"]
    await browser.shot("editor-saved")

    await browser.open("/console/catalog/routers/r")
    await choose(browser, "flow_group", "form-made")
    await browser.submit("#save-button")
    assert (await text_of(browser, "saved")).startswith("saved: catalog version")
    await kp.daemon.wait_catalog(before + 2, timeout=5.0)
    audit = await db.fetch("SELECT what, detail::text AS d FROM console_audit ORDER BY at")
    assert [a["what"] for a in audit][-2:] == ["flow group saved", "router saved"]

    call = await test_caller.place_call("18005550601", variables={
        "KEYPRESS_TOKEN_CALLER_STATE": "CA"})
    call_id = await kp.watch.call_id_for(call.remote_id)
    await kp.watch.event(call_id, "prompt_started")
    await browser.open("/console/live")
    await element(browser, f"call-{call_id}")
    await call.press("1")
    await kp.watch.event(call_id, "disposition", disposition="sale_form")
    await call.wait_hangup(10)
    assert kp.daemon.calllog is not None and await kp.daemon.calllog.flush(10)
    await browser.open(f"/console/calls/{call_id}")
    timeline = await text_of(browser, "timeline")
    assert "key_press" in timeline and "form-made" in timeline and "sale_form" in timeline


async def test_the_second_of_two_edits_of_one_group_is_refused(
        console: tuple[RunningDaemon, Browser], db: Any) -> None:
    _, first = console
    await log_in(first)
    second = await asyncio.to_thread(Browser, first.base)
    try:
        await log_in(second)
        await first.open("/console/catalog/flow_groups/prompt")
        await second.open("/console/catalog/flow_groups/prompt")
        await element(first, "flows[0].name")
        await element(second, "flows[0].name")
        await first.fill("flows[0].extra_tokens[0].value", "first")
        await first.submit("#save-button")
        assert (await text_of(first, "saved")).startswith("saved")
        await second.fill("flows[0].extra_tokens[0].value", "second")
        await second.submit("#save-button")
        refused = await text_of(second, "form-error")
        assert "flow group prompt changed since you opened it" in refused, refused
        await second.shot("editor-conflict")
        tokens = await db.fetchval("""SELECT f.extra_tokens::text FROM flows f
            JOIN flow_groups g ON g.id = f.flow_group_id WHERE g.name = 'prompt'""")
        assert '"first"' in tokens and "second" not in tokens

        # an edit of another object opened before the first save still goes through
        await second.open("/console/catalog/buyers/acme")
        await element(second, "ring_timeout")
        await first.open("/console/catalog/flow_groups/prompt")
        await first.fill("max_attempts", "4")
        await first.submit("#save-button")
        assert (await text_of(first, "saved")).startswith("saved")
        await second.fill("ring_timeout", "33")
        await second.submit("#save-button")
        assert (await text_of(second, "saved")).startswith("saved")
        assert await db.fetchval("SELECT ring_timeout FROM buyers WHERE name = 'acme'") == 33
        await second.shot("editor-buyer")
        # a new object whose name someone else took meanwhile is refused too
        await first.open("/console/catalog/buyers/_new")
        await second.open("/console/catalog/buyers/_new")
        for browser in (first, second):
            await browser.fill("name", "twin")
            await browser.fill("endpoint", "PJSIP/twin")
        await first.submit("#save-button")
        assert await text_of(first, "saved") == "saved"
        await second.submit("#save-button")
        assert "buyer twin was created by someone else" in await text_of(second, "form-error")
    finally:
        await asyncio.to_thread(second.close)


async def test_editor_and_blocklist_forms_need_the_session_and_csrf(
        console: tuple[RunningDaemon, Browser], db: Any) -> None:
    """Over plain HTTP: every editor and blocklist POST wants the session and its CSRF
    token; the blocklist page blocks and unblocks with an audit row; a delete is refused
    while the object is used or changed since it was opened."""
    kp, _ = console
    assert kp.daemon.admin is not None
    base = kp.daemon.admin.url
    forms_posted = ["/console/catalog/buyers/acme", "/console/catalog/buyers/acme/delete",
                    "/console/blocklist"]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        for path in forms_posted:
            async with http.post(base + path, data={"csrf": "x", "number": "1"}) as resp:
                assert resp.status == 403, path  # no session
        async with http.post(f"{base}/console/login", data={"token": ADMIN_TOKEN}) as resp:
            assert resp.status == 200
        for path in forms_posted:
            async with http.post(base + path, data={"csrf": "wrong", "number": "1"}) as resp:
                assert resp.status == 403, path  # a session, not its token
        async with http.get(f"{base}/console/catalog/buyers/acme") as resp:
            page = await resp.text()
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        opened = re.search(r'name="opened" value="([^"]+)"', page)
        assert csrf and opened
        token = csrf.group(1)
        async with http.get(f"{base}/console/catalog/routers/nope") as resp:
            assert resp.status == 404

        async with http.post(f"{base}/console/blocklist", data={
                "csrf": token, "number": "has space", "reason": ""}) as resp:
            assert resp.status == 422 and "without spaces" in await resp.text()
        async with http.post(f"{base}/console/blocklist", data={
                "csrf": token, "number": "5559990000", "reason": "<b>spam</b>"}) as resp:
            text = await resp.text()
            assert resp.status == 200 and "&lt;b&gt;spam&lt;/b&gt;" in text  # escaped
        assert await db.fetchval("SELECT reason FROM blocklist WHERE caller_number = "
                                 "'5559990000'") == "<b>spam</b>"
        async with http.post(f"{base}/console/blocklist", data={
                "csrf": token, "number": "5559990000", "action": "remove"}) as resp:
            assert resp.status == 200 and "Nobody is blocked" in await resp.text()
        whats = [r["what"] for r in await db.fetch(
            "SELECT what FROM console_audit ORDER BY at")]
        assert whats[-2:] == ["caller blocked", "caller unblocked"]

        delete = f"{base}/console/catalog/buyers/acme/delete"
        async with http.post(delete, data={"csrf": token, "opened": "stale"}) as resp:
            assert resp.status == 409 and "changed since you opened it" in await resp.text()
        async with http.post(delete, data={"csrf": token, "opened": opened.group(1)}) as resp:
            assert resp.status == 409 and "used by router &#39;bridged&#39;" in await resp.text()
        assert await db.fetchval("SELECT count(*) FROM buyers WHERE name = 'acme'") == 1


UNLABELLED = """
return Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea'))
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
  .map(el => el.name || el.id);
"""


@pytest.mark.parametrize("path", ["/console/catalog/flow_groups/prompt",
                                  "/console/catalog/routers/r", "/console/catalog",
                                  "/console/blocklist", "/console/live", "/console/calls",
                                  "/console/simulate", "/console/"])
async def test_every_field_has_a_label_and_pages_fit_a_phone(
        console: tuple[RunningDaemon, Browser], path: str) -> None:
    _, browser = console
    await log_in(browser)
    await browser.open(path)
    await browser.wait(ec.presence_of_element_located((By.TAG_NAME, "h1")))
    assert await browser.run(lambda d: d.execute_script(UNLABELLED)) == []
    await browser.run(lambda d: d.set_window_size(390, 844))
    await browser.open(path)
    await browser.wait(ec.presence_of_element_located((By.TAG_NAME, "h1")))
    wide = await browser.run(lambda d: d.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth]"))
    assert wide[0] <= wide[1], f"{path}: {wide[0]} px of content in a {wide[1]} px window"
    await browser.shot("phone-" + (path.strip("/").replace("/", "-") or "dashboard"))
