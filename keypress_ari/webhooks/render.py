"""Turning a flow's webhook into the request to send (pure, no I/O).

``render_webhook`` replaces ``{{token}}`` (spaces inside the braces allowed) with the call's
data: in every string of the body, at any depth (mapping keys are left as written; a string
stays a string even when it is only a token), and in the URL, where substituted values are
percent-encoded so they cannot change the URL's structure. A token the data lacks becomes
an empty string plus a warning naming it; rendering never fails.

The body is compact JSON with sorted keys (the database does not keep key order, so sorting
makes the bytes the same whichever way the catalog was loaded); ``Content-Type:
application/json`` is added unless the flow set a content type. ``sign`` gives the value of
the ``X-Keypress-Signature`` header.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from pydantic import JsonValue

from keypress_ari.calllog.ops import WebhookQueued
from keypress_ari.flows.actions import TOKEN_USE, Webhook

SIGNATURE_HEADER = "X-Keypress-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True, slots=True)
class RenderedWebhook:
    url: str
    method: str
    headers: dict[str, str]
    body: str  # compact JSON, or "" when the webhook has no body
    warnings: tuple[str, ...] = field(default=())


class _Substituter:
    """Replaces tokens in strings, remembering which ones the data lacked."""

    def __init__(self, data: Mapping[str, str]) -> None:
        self.data = data
        self.missing: list[str] = []

    def __call__(self, text: str, encode: Callable[[str], str] | None = None) -> str:
        if "{{" not in text:
            return text

        def one(m: re.Match[str]) -> str:
            name = m.group(1).strip()
            value = self.data.get(name)
            if value is None:
                if name not in self.missing:
                    self.missing.append(name)
                return ""
            value = str(value)
            return encode(value) if encode is not None else value

        return TOKEN_USE.sub(one, text)

    def body(self, value: JsonValue) -> JsonValue:
        if isinstance(value, str):
            return self(value)
        if isinstance(value, list):
            return [self.body(v) for v in value]
        if isinstance(value, dict):
            return {k: self.body(v) for k, v in value.items()}
        return value


def _url_encode(value: str) -> str:
    return quote(value, safe="")


def render_webhook(webhook: Webhook, data: Mapping[str, str]) -> RenderedWebhook:
    """The request ``webhook`` describes, with the call's ``data`` substituted."""
    sub = _Substituter(data)
    url = sub(webhook.url, _url_encode)
    headers = dict(webhook.headers)
    body = ""
    if webhook.body is not None:
        body = json.dumps(
            sub.body(webhook.body), separators=(",", ":"), sort_keys=True, ensure_ascii=False
        )
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
    warnings = tuple(f"unknown token {name!r} (sent as an empty string)" for name in sub.missing)
    return RenderedWebhook(url, webhook.method, headers, body, warnings)


def sign(body: bytes, secret: str) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``body`` keyed with ``secret`` (UTF-8)."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def queued_op(
    call_id: str, flow: str | None, rendered: RenderedWebhook, *, key: str | None = None
) -> WebhookQueued:
    """The call log op that puts ``rendered`` in the outbox, with a fresh idempotency key
    unless ``key`` (a UUID string) is given."""
    return WebhookQueued(
        call_id=call_id,
        flow=flow,
        url=rendered.url,
        method=rendered.method,
        headers=dict(rendered.headers),
        body=rendered.body,
        idempotency_key=key or str(uuid.uuid4()),
    )
