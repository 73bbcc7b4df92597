"""Webhook model validation, rendering and signing (pure)."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from keypress_ari.calllog.ops import WebhookQueued
from keypress_ari.flows.actions import FlowAction, Webhook
from keypress_ari.flows.model import Flow
from keypress_ari.webhooks.render import queued_op, render_webhook, sign
from keypress_ari.webhooks.urls import safe_url

DATA = {"caller_number": "+1 555/0100", "digit": "1", "disposition": "sale", "buyer": "acme"}


def hook(**kw: Any) -> Webhook:
    return Webhook.model_validate({"url": "https://crm.example/hook", **kw})


def test_body_tokens_are_replaced_recursively_and_keys_untouched() -> None:
    body = {
        "caller": "{{caller_number}}",
        "{{digit}}": "key {{ digit }} ({{disposition}})",
        "nested": {"list": ["{{buyer}}", 3, True, None, {"x": "{{digit}}"}]},
        "n": 2.5,
    }
    r = render_webhook(hook(body=body), DATA)
    assert json.loads(r.body) == {
        "caller": "+1 555/0100",
        "{{digit}}": "key 1 (sale)",
        "nested": {"list": ["acme", 3, True, None, {"x": "1"}]},
        "n": 2.5,
    }
    assert r.warnings == ()
    assert r.method == "POST"
    assert r.headers == {"Content-Type": "application/json"}


def test_body_is_compact_json_with_sorted_keys() -> None:
    r = render_webhook(hook(body={"b": "é{{digit}}", "a": [1, 2]}), DATA)
    assert r.body == '{"a":[1,2],"b":"é1"}'


def test_a_string_that_is_only_a_token_stays_a_string() -> None:
    r = render_webhook(hook(body={"key": "{{digit}}"}), DATA)
    assert json.loads(r.body) == {"key": "1"}


def test_unknown_token_becomes_empty_with_one_warning_each() -> None:
    r = render_webhook(
        hook(url="https://crm.example/x?lead={{lead_id}}",
             body={"a": "{{lead_id}}", "b": "<{{nope}}>", "c": "{{lead_id}}"}),
        DATA,
    )
    assert r.url == "https://crm.example/x?lead="
    assert json.loads(r.body) == {"a": "", "b": "<>", "c": ""}
    assert len(r.warnings) == 2
    assert "'lead_id'" in r.warnings[0] and "'nope'" in r.warnings[1]


def test_url_values_are_percent_encoded() -> None:
    data = {**DATA, "q": "a&b=c#d"}
    r = render_webhook(hook(url="https://crm.example/leads/{{caller_number}}?q={{q}}"), data)
    assert r.url == "https://crm.example/leads/%2B1%20555%2F0100?q=a%26b%3Dc%23d"


def test_no_body_means_empty_string_and_no_content_type() -> None:
    r = render_webhook(hook(method="GET", headers={"X-Api-Key": "abc"}), DATA)
    assert (r.body, r.method, r.headers) == ("", "GET", {"X-Api-Key": "abc"})


def test_own_content_type_is_kept() -> None:
    r = render_webhook(hook(headers={"content-type": "application/vnd.crm+json"}, body=[1]), {})
    assert r.headers == {"content-type": "application/vnd.crm+json"}
    assert r.body == "[1]"


def test_render_does_not_mutate_the_model() -> None:
    webhook = hook(body={"a": ["{{digit}}"]}, headers={"X-A": "1"})
    render_webhook(webhook, DATA)
    assert webhook.body == {"a": ["{{digit}}"]} and webhook.headers == {"X-A": "1"}


def test_sign_is_hmac_sha256_hex() -> None:
    expected = hmac.new(b"s3cret", b'{"a":1}', hashlib.sha256).hexdigest()
    assert sign(b'{"a":1}', "s3cret") == f"sha256={expected}"
    assert sign(b"", "").startswith("sha256=") and len(sign(b"", "")) == 7 + 64


def test_queued_op_carries_the_rendered_request() -> None:
    r = render_webhook(hook(body={"k": "{{digit}}"}), DATA)
    call_id = str(uuid.uuid4())
    op = queued_op(call_id, "g/sale", r)
    assert isinstance(op, WebhookQueued)
    assert (op.call_id, op.flow, op.url, op.method, op.body) == (
        call_id, "g/sale", r.url, "POST", '{"k":"1"}')
    assert uuid.UUID(op.idempotency_key)
    assert queued_op(call_id, None, r).idempotency_key != op.idempotency_key
    assert queued_op(call_id, None, r, key="k").idempotency_key == "k"


def test_safe_url_drops_credentials_and_query() -> None:
    assert safe_url("https://u:p@crm.example:8443/a/b?token=x#f") == "https://crm.example:8443/a/b"
    assert safe_url("http://[::1]:8080/h?x") == "http://[::1]:8080/h"


# -- model validation ------------------------------------------------------------------------


def test_defaults_and_yaml_form() -> None:
    action = FlowAction.model_validate({"webhook": {"url": "http://127.0.0.1:9/x"}})
    assert action.webhook.method == "POST"
    assert action.webhook.headers == {} and action.webhook.body is None
    assert action.model_dump(exclude_defaults=True) == {"webhook": {"url": "http://127.0.0.1:9/x"}}


def test_header_values_numbers_become_strings() -> None:
    assert hook(headers={"X-Count": 5}).headers == {"X-Count": "5"}


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"url": "ftp://crm.example/x"}, "http(s) URL"),
        ({"url": "/relative"}, "http(s) URL"),
        ({"url": "https://crm.example/a b"}, "spaces"),
        ({"url": "https://{{host}}/x"}, "not allowed in the host"),
        ({"url": "https://crm.example/{{bad-name}}"}, "invalid token"),
        ({"method": "HEAD"}, "Input should be"),
        ({"method": "GET", "body": {"a": 1}}, "GET webhook takes no body"),
        ({"headers": {"Idempotency-Key": "x"}}, "set by the daemon"),
        ({"headers": {"x-keypress-signature": "x"}}, "set by the daemon"),
        ({"headers": {"Content-Length": "3"}}, "set by the daemon"),
        ({"headers": {"Bad Header": "x"}}, "invalid header name"),
        ({"headers": {"X-A": "1", "x-a": "2"}}, "given twice"),
        ({"headers": {"X-A": "a\r\nX-B: b"}}, "control characters"),
        ({"headers": {"X-A": True}}, "quote the value"),
        ({"body": {"x": float("nan")}}, "finite"),
        ({"body": {"x": "{{ 1bad }}"}}, "invalid token"),
        ({"bogus": 1}, "Extra inputs"),
    ],
)
def test_invalid_webhooks(fields: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        hook(**fields)
    assert fragment in str(info.value)


def test_a_flow_with_only_webhooks_is_valid() -> None:
    flow = Flow.model_validate(
        {"key": "3", "actions": [{"webhook": {"url": "https://crm.example/x"}}]}
    )
    assert len(flow.actions) == 1
    with pytest.raises(ValidationError, match="a flow must set"):
        Flow.model_validate({"key": "3", "actions": []})


def test_webhooks_may_go_with_continue_routing() -> None:
    flow = Flow.model_validate(
        {"key": "1", "continue_routing": True,
         "actions": [{"webhook": {"url": "https://crm.example/x", "method": "PUT"}}]}
    )
    assert flow.actions[0].webhook.method == "PUT"
