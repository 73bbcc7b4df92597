"""The Prometheus text exposition, parsed back strictly."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from keypress_ari.calllog.ops import CallEvent
from keypress_ari.metrics import DaemonMetrics, Registry

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = rf'({_NAME})="((?:[^"\\\n]|\\[\\"n])*)"'
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{((?:{_LABEL},?)*)\}})? (\S+)$")
_META = re.compile(rf"^# (HELP|TYPE) ({_NAME}) (.*)$")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), v)


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """Types by family and samples by (name, sorted labels); fails on any malformed line."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: Samples = {}
    for line in text.splitlines():
        meta = _META.match(line)
        if meta:
            if meta.group(1) == "TYPE":
                assert meta.group(3) in ("counter", "gauge", "histogram"), line
                types[meta.group(2)] = meta.group(3)
            continue
        m = _SAMPLE.match(line)
        assert m, f"malformed sample line: {line!r}"
        name, labels_text, value = m.group(1), m.group(2) or "", m.group(m.lastindex or 0)
        labels = tuple(sorted((k, _unescape(v)) for k, v in re.findall(_LABEL, labels_text)))
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or family in types, f"sample before its TYPE: {line!r}"
        key = (name, labels)
        assert key not in samples, f"duplicate sample {key}"
        samples[key] = float(value.replace("+Inf", "inf"))
    return types, samples


def event(kind: str, flow: str | None = None, **detail: Any) -> CallEvent:
    return CallEvent("c1", 1, datetime.now(UTC), "caller", kind, "1", flow, detail)


def test_key_presses_and_actions_from_call_log_ops() -> None:
    active = [3]
    m = DaemonMetrics(calls_active=lambda: active[0])
    for _ in range(2):
        m.observe_op(event("key_press", "press-one/key 1 #2", matched=True))
    m.observe_op(event("key_press", reason="no flow for key 5", matched=False))
    m.observe_op(event("key_press", "agent/back", matched=True, ignored=True))
    m.observe_op(event("call_control_action", "agent/mute", action="mute_consumer",
                       outcome="ok"))
    m.observe_op(event("call_control_action", "agent/mute", action="mute_consumer",
                       outcome="failed"))
    m.observe_op(event("key_press", "agent/back", matched=True, mode="ami"))
    m.observe_op(event("call_control_action", "agent/mute", action="mute_consumer",
                       outcome="ok", mode="fastagi"))
    m.observe_op(event("tokens_set", tokens={}))
    m.observe_op(object())
    m.observe_webhook("delivered")
    active[0] = 5
    types, s = parse(m.render())
    assert types == {
        "keypress_calls_active": "gauge",
        "keypress_key_presses_total": "counter",
        "keypress_call_control_actions_total": "counter",
        "keypress_webhook_deliveries_total": "counter",
        "keypress_broadcast_claims_total": "counter",
        "keypress_dtmf_to_ari_seconds": "histogram",
    }
    assert s[("keypress_calls_active", ())] == 5
    kp = "keypress_key_presses_total"
    stasis = ("mode", "stasis")  # rows without a mode are the stasis mode's
    assert s[(kp, (("flow", "key 1 #2"), ("group", "press-one"), stasis,
                   ("outcome", "matched")))] == 2
    assert s[(kp, (("flow", "none"), ("group", "none"), stasis, ("outcome", "no_match")))] == 1
    assert s[(kp, (("flow", "back"), ("group", "agent"), stasis, ("outcome", "ignored")))] == 1
    assert s[(kp, (("flow", "back"), ("group", "agent"), ("mode", "ami"),
                   ("outcome", "matched")))] == 1
    act = "keypress_call_control_actions_total"
    assert s[(act, (("action", "mute_consumer"), stasis, ("outcome", "ok")))] == 1
    assert s[(act, (("action", "mute_consumer"), stasis, ("outcome", "failed")))] == 1
    assert s[(act, (("action", "mute_consumer"), ("mode", "fastagi"), ("outcome", "ok")))] == 1
    assert s[("keypress_webhook_deliveries_total", (("outcome", "delivered"),))] == 1


def test_webhook_counts_can_be_read_at_scrape_time() -> None:
    counts = {"delivered": 4, "retry": 1}
    m = DaemonMetrics()
    m.set_webhook_source(lambda: counts)
    _, s = parse(m.render())
    assert s[("keypress_webhook_deliveries_total", (("outcome", "retry"),))] == 1
    counts["delivered"] = 6
    _, s = parse(m.render())
    assert s[("keypress_webhook_deliveries_total", (("outcome", "delivered"),))] == 6


def test_shared_database_counters_are_read_at_scrape_time() -> None:
    state = {"fallbacks": 0.0, "reconnects": 1.0}
    m = DaemonMetrics()
    m.set_shared_db_sources(lambda: state["fallbacks"], lambda: state["reconnects"])
    types, s = parse(m.render())
    assert types["keypress_buyer_limit_fallbacks_total"] == "counter"
    assert s[("keypress_buyer_limit_fallbacks_total", ())] == 0
    assert s[("keypress_listen_reconnects_total", ())] == 1
    state["fallbacks"] = 3
    _, s = parse(m.render())
    assert s[("keypress_buyer_limit_fallbacks_total", ())] == 3


def test_call_log_state_is_read_at_scrape_time() -> None:
    state = {"backlog": 3.0, "full": 0.0, "episodes": 1.0, "rejected": 0.0}
    m = DaemonMetrics()
    m.set_call_log_source(lambda: state["backlog"], lambda: state["full"],
                          lambda: state["episodes"], rejected=lambda: state["rejected"])
    types, s = parse(m.render())
    assert types["keypress_call_log_rejected_total"] == "counter"
    assert s[("keypress_call_log_rejected_total", ())] == 0
    state["rejected"] = 2
    _, s = parse(m.render())
    assert s[("keypress_call_log_rejected_total", ())] == 2
    assert s[("keypress_journal_full_total", ())] == 1
    assert s[("keypress_call_log_backlog", ())] == 3


def test_histogram_buckets_are_cumulative_with_inf_sum_and_count() -> None:
    m = DaemonMetrics()
    for seconds in (0.00005, 0.0004, 0.003, 0.003, 2.0):
        m.observe_dtmf_to_ari(seconds)
    _, s = parse(m.render())
    name = "keypress_dtmf_to_ari_seconds"
    buckets = {dict(k[1])["le"]: v for k, v in s.items() if k[0] == name + "_bucket"}
    assert buckets["0.0001"] == 1 and buckets["0.0005"] == 2 and buckets["0.0025"] == 2
    assert buckets["0.005"] == 4 and buckets["0.1"] == 4 and buckets["+Inf"] == 5
    ordered = sorted(buckets.items(), key=lambda kv: float(kv[0].replace("+Inf", "inf")))
    assert [v for _, v in ordered] == sorted(v for _, v in ordered)
    assert s[(name + "_count", ())] == 5
    assert math.isclose(s[(name + "_sum", ())], 2.00645)


def test_label_values_and_help_are_escaped() -> None:
    r = Registry()
    c = r.counter("x_total", 'help with \\ and\nnewline', ("a",))
    c.labels(a='quote " back \\ nl \n end').inc(2)
    text = r.render()
    assert "# HELP x_total help with \\\\ and\\nnewline" in text
    _, s = parse(text)
    assert s[("x_total", (("a", 'quote " back \\ nl \n end'),))] == 2


def test_cardinality_is_bounded() -> None:
    r = Registry()
    c = r.counter("y_total", "y", ("k",))
    c.max_series = 3
    for i in range(10):
        c.labels(k=str(i)).inc()
    _, s = parse(r.render())
    assert len(s) == 4 and s[("y_total", (("k", "other"),))] == 7


def test_misuse_is_refused() -> None:
    r = Registry()
    c = r.counter("z_total", "z", ("a",))
    with pytest.raises(ValueError):
        c.labels(b="1")
    with pytest.raises(ValueError):
        c.labels(a="1").inc(-1)
    with pytest.raises(ValueError):
        r.counter("z_total", "again")


def test_a_failing_gauge_source_does_not_break_the_scrape() -> None:
    def broken() -> float:
        raise RuntimeError("boom")

    m = DaemonMetrics(calls_active=broken)
    _, s = parse(m.render())
    assert math.isnan(s[("keypress_calls_active", ())])
