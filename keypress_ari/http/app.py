"""The admin HTTP API application and its server.

Every route needs ``Authorization: Bearer <token>`` except ``/healthz`` and ``/readyz`` (for
probes). Errors are JSON ``{"error": ...}`` (422s add ``path`` and ``problems``). The token
is never logged; the server keeps no access log.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from keypress_ari.flows.errors import CatalogError
from keypress_ari.http import calls_routes, catalog_routes
from keypress_ari.http.common import (
    MAX_BODY,
    METRICS,
    POOL,
    READY,
    ApiError,
    Handler,
    catalog_problem,
    json_response,
)
from keypress_ari.http.openapi import openapi_document
from keypress_ari.metrics import DaemonMetrics

PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
CONSOLE_PREFIX = "/console/"
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def _auth(token: str) -> Any:
    expected = _digest(token)

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in PUBLIC_PATHS or request.path.startswith(CONSOLE_PREFIX):
            return await handler(request)  # probes; the console checks its own session
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # Compare digests so that neither the content nor the length of the token leaks.
        ok = hmac.compare_digest(_digest(given.strip()), expected)
        if scheme.lower() != "bearer" or not ok:
            return web.json_response(
                {"error": "missing or wrong bearer token"}, status=401,
                headers={"WWW-Authenticate": 'Bearer realm="keypress-ari"'})
        return await handler(request)

    return auth


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.body, status=exc.status)
    except CatalogError as exc:  # e.g. the stored catalog does not validate
        return json_response(catalog_problem(exc).body, status=422)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response({"error": exc.reason}, status=exc.status)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when the ``ready`` callable reports ``{"ready": true, ...}``, else 503."""
    try:
        status = dict(await request.app[READY]())
    except Exception as exc:
        status = {"ready": False, "error": f"readiness check failed: {type(exc).__name__}"}
    return json_response(status, status=200 if status.get("ready") is True else 503)


async def metrics_text(request: web.Request) -> web.Response:
    body = request.app[METRICS].render().encode()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


def create_admin_app(
    *,
    pool: Any,
    token: str,
    ready: Callable[[], Awaitable[dict[str, Any]]],
    metrics: DaemonMetrics,
    live: Any = None,
    act_on_call: Callable[[str, str], bool] | None = None,
    activity: Any = None,
) -> web.Application:
    """The admin API. ``pool`` is an asyncpg pool; ``ready()`` returns a dict with
    ``"ready": bool`` (plus details shown by ``/readyz``)."""
    if not token:
        raise ValueError("the admin API needs a token")
    app = web.Application(middlewares=[_auth(token), _errors], client_max_size=MAX_BODY)
    app[POOL] = pool
    app[READY] = ready
    app[METRICS] = metrics
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_get("/openapi.json", openapi)
    catalog_routes.add_routes(app)
    calls_routes.add_routes(app)
    if live is not None:
        from keypress_ari.console import add_console

        add_console(app, token=token, live=live,
                    act_on_call=act_on_call or (lambda call_id, action: False),
                    activity=activity)
    return app


class AdminServer:
    """Serves an admin app on ``host``:``port`` (port 0: any free port, see ``port``)."""

    def __init__(self, app: web.Application, host: str = "127.0.0.1", port: int = 8089) -> None:
        self.app = app
        self.host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    @property
    def port(self) -> int:
        """The bound port (once started)."""
        if self._runner is not None and self._runner.addresses:
            return int(self._runner.addresses[0][1])
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


__all__ = ["AdminServer", "create_admin_app"]
