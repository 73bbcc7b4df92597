"""Shared pieces of the admin API: app keys, JSON bodies, errors as JSON responses."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from keypress_ari.flows.errors import CatalogError
from keypress_ari.metrics import DaemonMetrics

SOURCE = "request body"
MAX_BODY = 1024 * 1024

ReadyCheck = Callable[[], Awaitable[dict[str, Any]]]

POOL: web.AppKey[Any] = web.AppKey("pool")  # an asyncpg pool
METRICS = web.AppKey("metrics", DaemonMetrics)
READY: web.AppKey[ReadyCheck] = web.AppKey("ready")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error response: ``status`` and a JSON body with at least ``error``."""

    def __init__(self, status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.body: dict[str, Any] = {"error": error, **extra}


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


async def read_json(request: web.Request, *, required: bool = True) -> Any:
    """The parsed body; 400 naming the problem when it is not JSON."""
    text = await request.text()
    if not text.strip():
        if required:
            raise ApiError(400, f"{SOURCE}: empty body (a JSON document is expected)")
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"{SOURCE}: malformed JSON: {exc}") from None


async def read_object(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    data = await read_json(request, required=required)
    if data is None and not required:
        return {}
    if not isinstance(data, dict):
        raise ApiError(422, f"{SOURCE}: must be a JSON object", path="",
                       problems=[{"path": "", "message": "must be a JSON object"}])
    return data


def _strip(path: str, prefix: re.Pattern[str]) -> str:
    m = prefix.match(path)
    if m is None:
        return path
    rest = path[m.end():]
    return rest[1:] if rest.startswith(".") else rest


def object_prefix(kind: str, index: int = 0) -> re.Pattern[str]:
    """Matches ``routers[0]`` / ``routers[0] (main)`` at the start of a path, followed by a
    ``.`` or the end of it."""
    return re.compile(rf"^{re.escape(kind)}\[{index}\](?: \(.*?\))?(?=\.|$)")


def catalog_problem(exc: CatalogError, *prefixes: re.Pattern[str]) -> ApiError:
    """A 422 for a catalog validation error, with paths relative to the object sent (each
    prefix in turn is removed when the path starts with it)."""

    def rebase(path: str) -> str:
        for prefix in prefixes:
            path = _strip(path, prefix)
        return path

    problems = [{"path": rebase(p), "message": m} for p, m in ((exc.path, exc.message),
                                                                  *exc.others)]
    first = problems[0]
    where = f"{first['path']}: " if first["path"] else ""
    line = f"{exc.source}: {where}{first['message']}"
    return ApiError(422, line, path=first["path"], problems=problems)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)
