"""Typed errors raised by the ARI client.

Every error carries the HTTP ``method`` and ``path`` (never the query string, never the
credentials) and Asterisk's own ``message`` when it sent one.
"""

from __future__ import annotations

__all__ = [
    "AriBadRequest",
    "AriConflict",
    "AriError",
    "AriNotFound",
    "AriServerError",
    "AriUnavailable",
    "error_for_status",
]


class AriError(Exception):
    """An ARI request failed.

    ``status`` is the HTTP status, or ``None`` when no response arrived
    (see :class:`AriUnavailable`).
    """

    def __init__(
        self, message: str, *, status: int | None = None, method: str = "", path: str = ""
    ) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.message = message
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"{self.method} {self.path}".strip()
        status = "no response" if self.status is None else str(self.status)
        return f"ARI {where} -> {status}: {self.message}" if where else self.message


class AriBadRequest(AriError):
    """400: a missing or invalid parameter."""


class AriNotFound(AriError):
    """404: the channel, bridge, playback (or channel variable) does not exist.

    For channels and bridges this is usually a normal race with a hangup.
    """


class AriConflict(AriError):
    """409: the object is in the wrong state, e.g. the channel is not in a Stasis app."""


class AriServerError(AriError):
    """5xx: Asterisk failed to carry out the request."""


class AriUnavailable(AriError):
    """No usable response: connection refused or dropped, or the request timed out."""


_BY_STATUS: dict[int, type[AriError]] = {
    400: AriBadRequest,
    404: AriNotFound,
    409: AriConflict,
}


def error_for_status(status: int, method: str, path: str, message: str) -> AriError:
    """Build the typed error for a non-2xx HTTP status."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = AriServerError if status >= 500 else AriError
    return cls(message, status=status, method=method, path=path)
