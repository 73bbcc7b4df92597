"""Choosing the flow for a key press (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from keypress_ari.flows.match import Matched, NoMatch, match
from keypress_ari.flows.model import FlowGroup


def group(*flows: dict[str, Any], **extra: Any) -> FlowGroup:
    return FlowGroup.model_validate({"name": "g", "flows": list(flows), **extra})


CA_ONLY = {
    "name": "ca",
    "key": "1",
    "filters": [{"token": "caller_state", "op": "==", "value": "CA"}],
    "extra_tokens": {"queue": "west"},
    "continue_routing": True,
}
HIGH_SCORE = {
    "key": "1",
    "filters": [
        {"token": "score", "op": ">=", "value": 50},
        {"token": "vip", "op": "exists"},
    ],
    "disposition": "vip",
}
ANY_1 = {"key": 1, "extra_tokens": {"queue": "general"}, "continue_routing": True}
KEY_2 = {"key": "2", "disposition": "not_interested"}


def test_same_key_chosen_by_call_data() -> None:
    g = group(CA_ONLY, HIGH_SCORE, ANY_1, KEY_2)
    ca = match(g, "1", {"caller_state": "CA", "score": "90", "vip": "1"})
    vip = match(g, "1", {"caller_state": "NY", "score": "90", "vip": "1"})
    other = match(g, "1", {"caller_state": "NY", "score": "90"})
    assert isinstance(ca, Matched) and (ca.position, ca.label) == (0, "ca")
    assert ca.flow.extra_tokens == {"queue": "west"}
    assert isinstance(vip, Matched) and (vip.position, vip.label) == (1, "key 1 #2")
    assert vip.flow.disposition == "vip"
    assert isinstance(other, Matched) and (other.position, other.label) == (2, "key 1 #3")


def test_first_match_in_file_order_wins() -> None:
    a = {**KEY_2, "name": "first"}
    b = {**KEY_2, "name": "second", "filters": [{"token": "x", "op": "exists"}]}
    result = match(group({**a, "filters": [{"token": "x", "op": "exists"}]}, b), "2", {"x": ""})
    assert isinstance(result, Matched) and result.label == "first"
    result = match(group(b, a), "2", {"x": ""})
    assert isinstance(result, Matched) and result.label == "second"


def test_other_keys_do_not_interfere() -> None:
    g = group(KEY_2, ANY_1)
    result = match(g, "2", {})
    assert isinstance(result, Matched)
    assert result.position == 0 and result.flow.disposition == "not_interested"


def test_no_flow_for_key() -> None:
    result = match(group(KEY_2), "5", {})
    assert result == NoMatch("5", ())
    assert result.reason == "no flow for key 5"


def test_unknown_key_is_no_match() -> None:
    assert isinstance(match(group(KEY_2), "A", {}), NoMatch)


def test_no_match_explains_each_candidate() -> None:
    g = group(CA_ONLY, HIGH_SCORE, KEY_2)
    result = match(g, "1", {"caller_state": "NY", "score": "10"})
    assert isinstance(result, NoMatch)
    assert [(m.position, m.label) for m in result.misses] == [(0, "ca"), (1, "key 1 #2")]
    assert result.misses[0].why == "caller_state is 'NY', wanted == 'CA'"
    assert result.misses[1].filter.token == "score"  # the first failing filter
    assert result.misses[1].why == "score is '10', wanted >= 50"
    assert result.reason == (
        "2 flows for key 1, none matched: ca (caller_state is 'NY', wanted == 'CA'); "
        "key 1 #2 (score is '10', wanted >= 50)"
    )


def test_no_match_reports_later_failing_filter() -> None:
    result = match(group(HIGH_SCORE), "1", {"score": "80"})
    assert isinstance(result, NoMatch)
    assert result.misses[0].filter.token == "vip"
    assert result.reason == "1 flow for key 1, none matched: key 1 #1 (vip is missing)"


def test_no_key_press_flow() -> None:
    g = group({"key": "no_key_press", "disposition": "no_response"}, KEY_2)
    result = match(g, "no_key_press", {})
    assert isinstance(result, Matched) and result.label == "key no_key_press #1"


def test_hit_path_does_not_explain(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: Any) -> str:
        raise AssertionError("explain called on the hit path")

    monkeypatch.setattr("keypress_ari.flows.match.explain", boom)
    g = group(CA_ONLY, ANY_1)
    assert isinstance(match(g, "1", {"caller_state": "NY"}), Matched)


def test_unreachable_flow_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"flows\[1\] \(ca\): can never match: flows\[0\]"):
        group(ANY_1, CA_ONLY)


def test_duplicate_flow_names_are_rejected() -> None:
    with pytest.raises(ValidationError, match="duplicate name"):
        group({**KEY_2, "name": "x"}, {**KEY_2, "key": "3", "name": "x"})


def test_labels() -> None:
    g = group(CA_ONLY, HIGH_SCORE, ANY_1, KEY_2)
    assert g.labels == ("ca", "key 1 #2", "key 1 #3", "key 2 #1")
    assert g.label(3) == "key 2 #1"
    assert [p for p, _ in g.flows_for("1")] == [0, 1, 2]
    assert g.flows_for("9") == ()


def test_matching_never_compiles_a_regex(monkeypatch: pytest.MonkeyPatch) -> None:
    g = group({**KEY_2, "filters": [{"token": "cid", "op": "=~", "value": "^1?800"}]})

    def no_compile(*_: Any, **__: Any) -> Any:
        raise AssertionError("regex compiled while matching")

    monkeypatch.setattr("re.compile", no_compile)
    assert isinstance(match(g, "2", {"cid": "18005550100"}), Matched)
    assert isinstance(match(g, "2", {"cid": "2125550100"}), NoMatch)
