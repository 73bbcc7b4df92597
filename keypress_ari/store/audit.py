"""The console's audit trail (``console_audit``): who changed what, and when."""

from __future__ import annotations

import json
from typing import Any


async def add(conn: Any, who: str, what: str, detail: dict[str, Any]) -> None:
    await conn.execute("INSERT INTO console_audit (who, what, detail) VALUES ($1, $2, $3)",
                       who, what, json.dumps(detail))


async def recent(conn: Any, limit: int = 20) -> list[Any]:
    """The newest rows first (at, who, what, detail)."""
    return list(await conn.fetch(
        "SELECT at, who, what, detail FROM console_audit ORDER BY at DESC LIMIT $1", limit))
