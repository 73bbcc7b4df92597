"""Reading calls and their call log back (CLI, admin API, tests)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keypress_ari.calllog.kinds import EventKind, press_outcome


@dataclass(frozen=True, slots=True)
class CallRow:
    id: str
    number: str
    caller_number: str
    router: str | None
    channel_id: str
    legs: dict[str, str]
    tokens: dict[str, str]
    disposition: str | None
    stage: str
    started_at: datetime
    ended_at: datetime | None
    ended_by: str | None
    end_reason: str | None


@dataclass(frozen=True, slots=True)
class EventRow:
    seq: int | None
    at: datetime
    leg: str | None
    kind: str
    digit: str | None
    flow: str | None
    detail: dict[str, Any]


_CALL_COLUMNS = """id::text AS id, number, caller_number, router, channel_id, legs, tokens,
    disposition, stage, started_at, ended_at, ended_by, end_reason"""


def _call(row: Any) -> CallRow:
    return CallRow(
        id=row["id"], number=row["number"], caller_number=row["caller_number"],
        router=row["router"], channel_id=row["channel_id"], legs=json.loads(row["legs"]),
        tokens=json.loads(row["tokens"]), disposition=row["disposition"], stage=row["stage"],
        started_at=row["started_at"], ended_at=row["ended_at"], ended_by=row["ended_by"],
        end_reason=row["end_reason"],
    )


async def get_call(conn: Any, call_id: str) -> CallRow | None:
    row = await conn.fetchrow(
        f"SELECT {_CALL_COLUMNS} FROM calls WHERE id = $1::uuid", call_id
    )
    return _call(row) if row else None


async def find_calls(
    conn: Any, *, number: str | None = None, channel_id: str | None = None, limit: int = 50
) -> list[CallRow]:
    """Newest first; ``channel_id`` matches any leg of the call."""
    rows = await conn.fetch(
        f"""SELECT {_CALL_COLUMNS} FROM calls
            WHERE ($1::text IS NULL OR number = $1)
              AND ($2::text IS NULL OR channel_id = $2
                   OR EXISTS (SELECT 1 FROM jsonb_each_text(legs) AS leg WHERE leg.value = $2))
            ORDER BY started_at DESC LIMIT $3""",
        number, channel_id, limit,
    )
    return [_call(r) for r in rows]


async def call_events(conn: Any, call_id: str) -> list[EventRow]:
    rows = await conn.fetch(
        """SELECT seq, at, leg, kind, digit, flow, detail FROM call_events
           WHERE call_id = $1::uuid ORDER BY at, seq NULLS LAST, id""",
        call_id,
    )
    return [
        EventRow(r["seq"], r["at"], r["leg"], r["kind"], r["digit"], r["flow"],
                 json.loads(r["detail"]))
        for r in rows
    ]


def format_timeline(call: CallRow, events: list[EventRow]) -> str:
    """A call and its log as text, one line per row, times relative to the call's start."""
    lines = [
        f"call {call.id}  number {call.number}  caller {call.caller_number or '-'}  "
        f"router {call.router or '-'}",
        f"started {call.started_at.isoformat()}  "
        + (f"ended {call.ended_at.isoformat()} by {call.ended_by}" if call.ended_at
           else f"still {call.stage}")
        + f"  disposition {call.disposition or '-'}",
    ]
    if call.tokens:
        lines.append("tokens " + ", ".join(f"{k}={v}" for k, v in sorted(call.tokens.items())))
    for e in events:
        offset = (e.at - call.started_at).total_seconds()
        detail = " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                          for k, v in e.detail.items())
        parts = [f"{offset:+9.3f}s", f"{e.leg or '-':7}", f"{e.kind:18}"]
        if e.digit:
            parts.append(f"digit={e.digit}")
        if e.flow:
            parts.append(f"flow={e.flow}")
        if e.kind == EventKind.KEY_PRESS:
            parts.append(f"outcome={press_outcome(e.detail)}")
        if detail:
            parts.append(detail)
        lines.append("  ".join(parts))
    return "\n".join(lines)
