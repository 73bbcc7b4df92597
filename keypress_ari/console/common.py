"""What the console's pages share: their app keys, the template environment, rendering
with safe headers, and the session and CSRF checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from keypress_ari.console.activity import Activity
from keypress_ari.console.live import LiveCalls
from keypress_ari.console.session import COOKIE, Session, Sessions

HERE = Path(__file__).parent
SESSIONS = web.AppKey("console_sessions", Sessions)
LIVE = web.AppKey("console_live", LiveCalls)
ACTIVITY = web.AppKey("console_activity", Activity)
ACT: web.AppKey[Callable[[str, str], bool]] = web.AppKey("console_act")
TEMPLATES = web.AppKey("console_templates", jinja2.Environment)
SSE_KEEPALIVE = 15.0  # seconds between comments on a quiet stream


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined)


def _render(request: web.Request, template: str, status: int = 200, **values: Any
            ) -> web.Response:
    values.setdefault("error", "")
    html = request.app[TEMPLATES].get_template(template).render(
        session=values.pop("session", None), **values)
    return web.Response(text=html, status=status, content_type="text/html", headers={
        "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'",
        "X-Frame-Options": "DENY", "Cache-Control": "no-store"})


def _session(request: web.Request) -> Session:
    session = request.app[SESSIONS].read(request.cookies.get(COOKIE))
    if session is None:
        raise web.HTTPSeeOther("/console/login")
    return session


async def _posted(request: web.Request) -> tuple[Session, Any]:
    """The session and the form of a POST whose CSRF token is right."""
    session = request.app[SESSIONS].read(request.cookies.get(COOKIE))
    form = await request.post()
    if session is None or not Sessions.csrf_ok(session, str(form.get("csrf", "")) or None):
        raise web.HTTPForbidden(text="missing session or wrong CSRF token")
    return session, form


