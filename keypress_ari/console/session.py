"""Console sessions: a signed cookie after a login with the admin token, and a CSRF token.

The cookie holds ``expiry.csrf`` and an HMAC-SHA256 of it under a key derived from the admin
token (changing the token logs every session out). It is HttpOnly, SameSite=Strict, and
Secure when the request came over TLS. Every form carries the session's CSRF token; a POST
without the right one is refused. Nothing here is stored server side.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

COOKIE = "kp_console"
LIFETIME = 12 * 3600  # seconds a login lasts


@dataclass(frozen=True, slots=True)
class Session:
    csrf: str
    expires: int


class Sessions:
    def __init__(self, token: str, lifetime: int = LIFETIME) -> None:
        self._token_digest = hashlib.sha256(token.encode()).digest()
        self._key = hmac.new(token.encode(), b"keypress-console-session", "sha256").digest()
        self._lifetime = lifetime

    def token_ok(self, given: str) -> bool:
        """The login form's token, compared by digest (neither content nor length leaks)."""
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), self._token_digest)

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), "sha256").hexdigest()

    def issue(self, now: float | None = None) -> tuple[Session, str]:
        """A new session and its cookie value."""
        expires = int((time.time() if now is None else now) + self._lifetime)
        session = Session(secrets.token_urlsafe(24), expires)
        payload = f"{expires}.{session.csrf}"
        return session, f"{payload}.{self._sign(payload)}"

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session of a cookie value, or None (absent, forged, expired)."""
        if not cookie or cookie.count(".") != 2:
            return None
        expires_text, csrf, signature = cookie.split(".")
        if not hmac.compare_digest(self._sign(f"{expires_text}.{csrf}"), signature):
            return None
        try:
            expires = int(expires_text)
        except ValueError:
            return None
        if expires < (time.time() if now is None else now):
            return None
        return Session(csrf, expires)

    @staticmethod
    def csrf_ok(session: Session, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(session.csrf, given)
