"""HTTP Basic credentials for ARI (the REST pool and the events websocket both send them)."""

from __future__ import annotations

import base64


def basic_auth_header(user: str, password: str) -> str:
    """The value of an HTTP Basic ``Authorization`` header."""
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return f"Basic {token}"
