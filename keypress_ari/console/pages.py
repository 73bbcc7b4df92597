"""The console's pages, served by the admin HTTP app under ``/console/`` (jinja2 templates,
every value escaped; readable without JavaScript, the live table updated by a small script
over server-sent events).

Every page but the login needs the session cookie (a missing or bad one redirects to the
login); every POST needs the session's CSRF token (403 otherwise). Operator actions go
through the call's own handling (``Dispatcher.operator_hangup``) and the call log.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from keypress_ari.calllog.kinds import press_outcome
from keypress_ari.calls.handover import OPERATOR_ACTIONS
from keypress_ari.console import catalog_page, editor_page
from keypress_ari.console.activity import Activity
from keypress_ari.console.common import (
    ACT,
    ACTIVITY,
    HERE,
    LIVE,
    SESSIONS,
    SSE_KEEPALIVE,
    TEMPLATES,
    _env,
    _posted,
    _render,
    _session,
)
from keypress_ari.console.live import LiveCalls
from keypress_ari.console.session import COOKIE, Sessions
from keypress_ari.http.common import METRICS, POOL
from keypress_ari.simulate import simulate
from keypress_ari.store import admin
from keypress_ari.store import log_queries as calls_store
from keypress_ari.store.catalog import load_catalog


async def login_page(request: web.Request) -> web.Response:
    return _render(request, "login.html", title="Log in")


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    sessions = request.app[SESSIONS]
    if not sessions.token_ok(str(form.get("token", ""))):
        return _render(request, "login.html", status=401, title="Log in",
                       error="That is not the admin token.")
    _, cookie = sessions.issue()
    response = web.HTTPSeeOther("/console/")
    response.set_cookie(COOKIE, cookie, httponly=True, samesite="Strict",
                        secure=request.secure, path="/console")
    raise response


async def logout(request: web.Request) -> web.Response:
    await _posted(request)
    response = web.HTTPSeeOther("/console/login")
    response.del_cookie(COOKIE, path="/console")
    raise response


async def dashboard(request: web.Request) -> web.Response:
    session = _session(request)
    presses = {"matched": 0.0, "no_match": 0.0, "ignored": 0.0}
    metrics = request.app[METRICS]
    for pairs, child in metrics.key_presses.children():
        outcome = dict(pairs).get("outcome", "")
        if outcome in presses:
            presses[outcome] += child.value
    failed = sum(c.value for p, c in metrics.actions.children()
                 if dict(p).get("outcome") == "failed")
    backlog, webhooks = "-", {"retry": "0", "dead": "0"}
    for line in metrics.render().splitlines():
        if line.startswith("keypress_call_log_backlog "):
            backlog = line.split()[1]
        for outcome in webhooks:
            if line.startswith(f'keypress_webhook_deliveries_total{{outcome="{outcome}"}}'):
                webhooks[outcome] = line.split()[1]
    return _render(request, "dashboard.html", session=session, title="Dashboard",
                   calls_now=len(request.app[LIVE]),
                   presses={k: int(v) for k, v in presses.items()},
                   actions_failed=int(failed), backlog=backlog, webhooks=webhooks,
                   hour=request.app[ACTIVITY].last_hour())


async def calls_page(request: web.Request) -> web.Response:
    session = _session(request)
    q = {k: request.query.get(k, "") for k in ("number", "caller", "disposition", "since")}
    error, rows = "", list[calls_store.CallRow]()
    try:
        since = datetime.fromisoformat(q["since"]) if q["since"] else None
    except ValueError:
        since, error = None, f"since: not an ISO 8601 time: {q['since']!r}"
    if not error:
        async with request.app[POOL].acquire() as conn:
            rows, _ = await admin.list_calls(conn, number=q["number"] or None,
                                             disposition=q["disposition"] or None,
                                             caller=q["caller"] or None, since=since,
                                             limit=200)
    return _render(request, "calls.html", session=session, title="Call log", q=q,
                   calls=rows, error=error)


async def call_page(request: web.Request) -> web.Response:
    session = _session(request)
    raw = request.match_info["call_id"]
    try:
        call_id = str(uuid.UUID(raw))
    except ValueError:
        raise web.HTTPNotFound(text=f"no call {raw!r}") from None
    async with request.app[POOL].acquire() as conn:
        call = await calls_store.get_call(conn, call_id)
        if call is None:
            raise web.HTTPNotFound(text=f"no call {call_id}")
        events = await calls_store.call_events(conn, call_id)
    for e in events:  # the outcome of each press in words, as the API says it
        if e.kind == "key_press":
            e.detail.setdefault("outcome", press_outcome(e.detail))
    return _render(request, "call.html", session=session, title=f"Call {call_id}",
                   call=call, events=events)


async def simulate_page(request: web.Request) -> web.Response:
    session = _session(request)
    q = {k: request.query.get(k, "") for k in ("number", "digit", "leg", "buyer", "tokens",
                                                 "mode")}
    q["leg"], q["mode"] = q["leg"] or "caller", q["mode"] or "stasis"
    result = ""
    if q["number"] and q["digit"]:
        tokens = dict(line.split("=", 1) for line in q["tokens"].splitlines() if "=" in line)
        async with request.app[POOL].acquire() as conn:
            catalog = await load_catalog(conn)
        result = simulate(catalog, number=q["number"], digit=q["digit"],
                          leg="buyer" if q["leg"] == "buyer" else "caller",
                          buyer=q["buyer"] or None, tokens=tokens, mode=q["mode"]).render()
    return _render(request, "simulate.html", session=session, title="Dry run", q=q,
                   result=result)


async def live_page(request: web.Request) -> web.Response:
    session = _session(request)
    return _render(request, "live.html", session=session, title="Live calls",
                   rows=request.app[LIVE].rows())


async def live_stream(request: web.Request) -> web.StreamResponse:
    _session(request)
    live = request.app[LIVE]
    queue = live.subscribe()
    if queue is None:
        raise web.HTTPServiceUnavailable(text="too many live pages open")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
    await response.prepare(request)
    try:
        # what is up now (the page drops rows that ended since it was rendered), then
        # the changes
        await response.write(f"data: {json.dumps({'rows': live.rows()})}\n\n".encode())
        while True:
            try:
                update = await _next(queue)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            await response.write(f"data: {json.dumps(update)}\n\n".encode())
    except (ConnectionResetError, RuntimeError):
        pass  # the page went away
    finally:
        live.unsubscribe(queue)
    return response


async def _next(queue: Any) -> dict[str, Any]:
    import asyncio

    async with asyncio.timeout(SSE_KEEPALIVE):
        return dict(await queue.get())


async def act(request: web.Request) -> web.Response:
    """A button of the live table: hang up, mute, unmute, hold, unhold the consumer."""
    await _posted(request)
    call_id, action = request.match_info["call_id"], request.match_info["action"]
    if action not in OPERATOR_ACTIONS:
        raise web.HTTPNotFound(text=f"no action {action!r}")
    if not request.app[ACT](call_id, action):
        raise web.HTTPNotFound(text=f"no live call {call_id} in this daemon")
    raise web.HTTPSeeOther("/console/live")


async def static(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    if name not in ("live.js", "editor.js"):
        raise web.HTTPNotFound()
    return web.FileResponse(HERE / "static" / name)


def add_console(app: web.Application, *, token: str, live: LiveCalls,
                act_on_call: Callable[[str, str], bool], activity: Activity | None = None
                ) -> None:
    app[SESSIONS] = Sessions(token)
    app[LIVE] = live
    app[ACT] = act_on_call
    app[ACTIVITY] = activity or Activity()
    app[TEMPLATES] = _env()
    r = app.router
    r.add_get("/console/login", login_page)
    r.add_post("/console/login", login)
    r.add_post("/console/logout", logout)
    r.add_get("/console/", dashboard)
    r.add_get("/console/calls", calls_page)
    r.add_get("/console/calls/{call_id}", call_page)
    r.add_get("/console/simulate", simulate_page)
    r.add_get("/console/live", live_page)
    r.add_get("/console/live/stream", live_stream)
    r.add_post("/console/live/{call_id}/{action}", act)
    r.add_get("/console/static/{name}", static)
    catalog_page.add_routes(app)
    editor_page.add_routes(app)
