"""What a flow does besides routing: call control actions and webhook actions.

``CallControlAction`` acts on the call (mute, hold, play, block, hang up). ``FlowAction`` holds
one ``Webhook``: an HTTP request sent after the key press through the webhook outbox
(``keypress_ari.webhooks``). YAML::

    actions:
      - webhook:
          url: "https://crm.example/hook?lead={{lead_id}}"
          method: POST                      # GET | POST | PUT | PATCH | DELETE (default POST)
          headers: {X-Api-Key: abc}
          body: {caller: "{{caller_number}}", key: "{{digit}}"}

``{{token}}`` in the URL (not in its scheme or host) and in every string of the body is
replaced by the call's data when the webhook fires (``webhooks.render``); keys and headers are
sent as written. ``Idempotency-Key``, ``X-Keypress-Signature``, ``Content-Length``, ``Host``
and ``Transfer-Encoding`` are set by the daemon and cannot be given.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
    model_serializer,
    model_validator,
)

from keypress_ari.flows.syntax import TOKEN_RE, ActionKind, Media, PlayTarget


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


ACTION_KINDS: tuple[str, ...] = get_args(ActionKind)


class CallControlAction(_Frozen):
    """One call control action. YAML: a bare name or a one-key mapping of its parameters."""

    kind: ActionKind
    media: Media | None = None
    to: PlayTarget = "consumer"
    reason: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {data: None}
        if isinstance(data, Mapping) and "kind" not in data:
            if len(data) != 1:
                raise ValueError("an action is a name or a mapping with exactly one key")
            ((kind, params),) = data.items()
            if kind not in ACTION_KINDS:
                raise ValueError(f"unknown action {kind!r}: one of {', '.join(ACTION_KINDS)}")
            if params is None:
                return {"kind": kind}
            if not isinstance(params, Mapping):
                raise ValueError(f"parameters of {kind} must be a mapping")
            return {"kind": kind, **params}
        return data

    @model_validator(mode="after")
    def _params(self) -> CallControlAction:
        if self.kind == "play":
            if self.media is None:
                raise ValueError("play needs media (e.g. sound:beep)")
        elif self.media is not None or self.to != "consumer":
            raise ValueError(f"{self.kind} takes no media/to")
        if self.reason is not None and self.kind != "block_caller":
            raise ValueError(f"{self.kind} takes no reason")
        return self

    @model_serializer(mode="plain")
    def _to_yaml(self) -> str | dict[str, dict[str, str]]:
        to = None if self.to == "consumer" else self.to
        given = (("media", self.media), ("to", to), ("reason", self.reason))
        params = {k: v for k, v in given if v is not None}
        return {self.kind: params} if params else self.kind


HttpMethod = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
# RFC 9110 token: the characters allowed in a header name.
HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
HEADER_VALUE_RE = re.compile(r"^[\t\x20-\x7e\x80-\U0010ffff]{0,4000}$")
RESERVED_HEADERS = frozenset(
    ["idempotency-key", "x-keypress-signature", "content-length", "host", "transfer-encoding"]
)
# ``{{ name }}`` with optional spaces inside the braces; TOKEN_USE finds every ``{{...}}``.
TOKEN_USE = re.compile(r"\{\{(.*?)\}\}")


def check_tokens(text: str, where: str) -> None:
    """Every ``{{...}}`` in ``text`` must hold a token name."""
    for inner in TOKEN_USE.findall(text):
        if not TOKEN_RE.match(inner.strip()):
            raise ValueError(f"{where}: invalid token {{{{{inner}}}}}: must match "
                             f"{TOKEN_RE.pattern}")


def template_tokens(value: JsonValue) -> set[str]:
    """Token names a URL or body uses as ``{{name}}`` (strings inside lists and dicts too)."""
    if isinstance(value, str):
        return {inner.strip() for inner in TOKEN_USE.findall(value)}
    if isinstance(value, list):
        return set().union(*(template_tokens(v) for v in value))
    if isinstance(value, dict):
        return set().union(*(template_tokens(v) for v in value.values()))
    return set()


def _check_body(value: JsonValue, depth: int = 0) -> None:
    if depth > 32:
        raise ValueError("body: nested too deeply")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("body: numbers must be finite")
    if isinstance(value, str):
        check_tokens(value, "body")
    elif isinstance(value, list):
        for item in value:
            _check_body(item, depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            _check_body(item, depth + 1)


class Webhook(_Frozen):
    """An HTTP request made when the flow runs (delivered with retries, never blocking)."""

    url: str = Field(max_length=2000)
    method: HttpMethod = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: JsonValue = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if any(c.isspace() for c in v):
            raise ValueError("url: must not contain spaces")
        try:
            parts = urlsplit(v)
        except ValueError as exc:
            raise ValueError(f"url: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"url must be an absolute http(s) URL, got {v!r}")
        if "{{" in parts.netloc or "}}" in parts.netloc:
            raise ValueError("url: tokens are not allowed in the host")
        check_tokens(v, "url")
        return v

    @field_validator("headers", mode="before")
    @classmethod
    def _headers(cls, v: Any) -> Any:
        if not isinstance(v, Mapping):
            return v
        out: dict[Any, Any] = {}
        seen: set[str] = set()
        for name, value in v.items():
            if not isinstance(name, str) or not HEADER_NAME_RE.match(name):
                raise ValueError(f"invalid header name {name!r}")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name} is set by the daemon")
            if name.lower() in seen:
                raise ValueError(f"header {name} given twice")
            seen.add(name.lower())
            if isinstance(value, bool):
                raise ValueError(f"header {name}: quote the value ({value!r} is a boolean)")
            if isinstance(value, int | float):
                value = str(value)
            if isinstance(value, str) and not HEADER_VALUE_RE.match(value):
                raise ValueError(f"header {name}: control characters or too long")
            out[name] = value
        return out

    @model_validator(mode="after")
    def _coherent(self) -> Webhook:
        _check_body(self.body)
        if self.method == "GET" and self.body is not None:
            raise ValueError("a GET webhook takes no body")
        return self


class FlowAction(_Frozen):
    """One entry of a flow's ``actions`` list; today the only kind is ``webhook``."""

    webhook: Webhook
