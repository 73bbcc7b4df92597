"""Calls (paged list, one call with its events), the blocklist, and the dry run."""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from keypress_ari.calllog.kinds import EventKind, press_outcome
from keypress_ari.flows.errors import format_loc
from keypress_ari.http.common import (
    POOL,
    SOURCE,
    ApiError,
    json_response,
    not_found,
    read_object,
)
from keypress_ari.simulate import simulate
from keypress_ari.store import admin
from keypress_ari.store import log_queries as calls_store
from keypress_ari.store.catalog import load_catalog

CALLER_RE = re.compile(r"^\S{1,64}$")


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def call_dict(call: calls_store.CallRow) -> dict[str, Any]:
    return {k: _iso(v) for k, v in asdict(call).items()}


def event_dict(event: calls_store.EventRow) -> dict[str, Any]:
    """One call log row; a key press row also says its ``outcome`` (matched, no_match or
    ignored: :func:`keypress_ari.calllog.kinds.press_outcome`)."""
    out = {k: _iso(v) for k, v in asdict(event).items()}
    if event.kind == EventKind.KEY_PRESS:
        out["outcome"] = press_outcome(event.detail)
    return out


def parse_time(name: str, raw: str | None) -> datetime | None:
    """An ISO 8601 time from a query parameter (UTC when it has no offset)."""
    if raw is None or raw == "":
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{name}: not an ISO 8601 time: {raw!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _limit(raw: str | None) -> int:
    if raw is None:
        return 50
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise ApiError(400, f"limit: must be a whole number from 1 to 1000, got {raw!r}")
    return int(raw)


async def list_calls(request: web.Request) -> web.Response:
    q = request.query
    unknown = sorted(set(q) - {"number", "disposition", "since", "until", "limit", "cursor"})
    if unknown:
        raise ApiError(400, f"unknown query parameter {unknown[0]!r}")
    since, until = parse_time("since", q.get("since")), parse_time("until", q.get("until"))
    async with request.app[POOL].acquire() as conn:
        try:
            rows, cursor = await admin.list_calls(
                conn, number=q.get("number") or None, disposition=q.get("disposition") or None,
                since=since, until=until, limit=_limit(q.get("limit")),
                cursor=q.get("cursor") or None)
        except admin.BadCursor as exc:
            raise ApiError(400, f"cursor: {exc}") from None
    return json_response({"calls": [call_dict(c) for c in rows], "next_cursor": cursor})


async def get_call(request: web.Request) -> web.Response:
    raw = request.match_info["call_id"]
    try:
        call_id = str(uuid.UUID(raw))
    except ValueError:
        raise not_found(f"no call {raw!r} (call ids are UUIDs)") from None
    async with request.app[POOL].acquire() as conn:
        call = await calls_store.get_call(conn, call_id)
        if call is None:
            raise not_found(f"no call {call_id}")
        events = await calls_store.call_events(conn, call_id)
    return json_response({"call": call_dict(call), "events": [event_dict(e) for e in events]})


# ---- blocklist ------------------------------------------------------------------------------

def _caller(request: web.Request) -> str:
    number = request.match_info["number"]
    if not CALLER_RE.match(number):
        raise ApiError(422, "number: must be 1 to 64 characters without spaces", path="number")
    return number


async def list_blocklist(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        return json_response([b.to_dict() for b in await admin.list_blocked(conn)])


async def put_blocked(request: web.Request) -> web.Response:
    number = _caller(request)
    body = await read_object(request, required=False)
    extra = sorted(set(body) - {"reason"})
    if extra:
        raise ApiError(422, f"{SOURCE}: {extra[0]}: unknown field", path=extra[0])
    reason = body.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 200:
        raise ApiError(422, f"{SOURCE}: reason: must be a string of at most 200 characters",
                       path="reason")
    async with request.app[POOL].acquire() as conn:
        row, created = await admin.add_blocked(conn, number, reason)
    return json_response(row.to_dict(), status=201 if created else 200)


async def delete_blocked(request: web.Request) -> web.Response:
    number = _caller(request)
    async with request.app[POOL].acquire() as conn:
        if not await admin.remove_blocked(conn, number):
            raise not_found(f"{number} is not blocked")
    return json_response({"deleted": number})


# ---- simulate -------------------------------------------------------------------------------

class SimulateRequest(BaseModel):
    """A key press to dry-run against the stored catalog."""

    model_config = ConfigDict(extra="forbid")

    number: str = Field(min_length=1, max_length=32)
    digit: str = Field(description="0-9, *, # or no_key_press")
    leg: Literal["caller", "buyer"] = "caller"
    buyer: str | None = None
    tokens: dict[str, str] = Field(default_factory=dict)
    buyer_seconds: float | None = Field(default=None, ge=0)
    stage: Literal["prompt", "live"] | None = Field(
        default=None, description="inferred when omitted")
    mode: Literal["stasis", "fastagi", "ami"] = Field(
        default="stasis", description="the call mode the press comes in by")

    @field_validator("number", "digit", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return str(v) if type(v) is int else v


async def post_simulate(request: web.Request) -> web.Response:
    body = await read_object(request)
    try:
        req = SimulateRequest.model_validate(body)
    except ValidationError as exc:
        problems = [{"path": format_loc(tuple(e["loc"])), "message": e["msg"]}
                    for e in exc.errors()]
        first = problems[0]
        raise ApiError(422, f"{SOURCE}: {first['path']}: {first['message']}",
                       path=first["path"], problems=problems) from None
    async with request.app[POOL].acquire() as conn:
        catalog = await load_catalog(conn)
    result = simulate(catalog, number=req.number, digit=req.digit, leg=req.leg, buyer=req.buyer,
                      tokens=req.tokens, buyer_seconds=req.buyer_seconds, stage=req.stage,
                      mode=req.mode)
    return json_response(result.to_dict())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/calls", list_calls)
    app.router.add_get("/calls/{call_id}", get_call)
    app.router.add_get("/blocklist", list_blocklist)
    app.router.add_put("/blocklist/{number}", put_blocked)
    app.router.add_delete("/blocklist/{number}", delete_blocked)
    app.router.add_post("/simulate", post_simulate)
