"""Filter semantics and explanations (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from keypress_ari.flows.filters import describe, explain, filter_matches
from keypress_ari.flows.model import Filter


def f(token: str, op: str, value: Any = None) -> Filter:
    return Filter.model_validate({"token": token, "op": op, "value": value})


@pytest.mark.parametrize(
    ("op", "value", "actual", "expected"),
    [
        ("==", "CA", "CA", True),
        ("==", "CA", "ca", False),  # case-sensitive
        ("==", 1, "1", True),
        ("==", 1, "1.0", False),  # string comparison, not numeric
        ("==", True, "true", True),
        ("==", True, "True", False),
        ("==", False, "false", True),
        ("!=", "CA", "NY", True),
        ("!=", "CA", "CA", False),
        (">", 18, "19", True),
        (">", 18, "18", False),
        (">", 18, "18.5", True),
        (">=", 18, "18", True),
        ("<", 2.5, "2.4", True),
        ("<", 2.5, "2.5", False),
        ("<=", "10", "10", True),
        ("<=", 10, "11", False),
        (">", 18, "abc", False),  # not a number: false
        ("<", 18, "abc", False),
        ("<=", 18, "", False),
        (">=", 18, "nan", False),
        ("contains", "solar", "home-solar-2024", True),
        ("contains", "solar", "roofing", False),
        ("in", ["CA", "NY"], "NY", True),
        ("in", ["CA", "NY"], "TX", False),
        ("in", [1, 2], "2", True),  # list scalars compared as strings
        ("not_in", ["CA", "NY"], "TX", True),
        ("not_in", ["CA", "NY"], "CA", False),
        ("=~", "^1?800", "18005550100", True),
        ("=~", "555", "18005550100", True),  # search, not full match
        ("=~", "^555", "18005550100", False),
        ("!~", "^(true|yes)$", "no", True),
        ("!~", "^(true|yes)$", "yes", False),
        ("exists", None, "", True),
        ("not_exists", None, "x", False),
    ],
)
def test_operators_on_present_token(op: str, value: Any, actual: str, expected: bool) -> None:
    assert filter_matches(f("t", op, value), {"t": actual}) is expected


@pytest.mark.parametrize(
    ("op", "value"),
    [
        ("==", "CA"),
        ("!=", "CA"),
        (">", 1),
        ("<", 1),
        (">=", 1),
        ("<=", 1),
        ("contains", "x"),
        ("in", ["a"]),
        ("not_in", ["a"]),
        ("=~", "."),
        ("!~", "."),
        ("exists", None),
    ],
)
def test_missing_token_is_false_for_every_op_but_not_exists(op: str, value: Any) -> None:
    assert filter_matches(f("t", op, value), {"other": "CA"}) is False


def test_not_exists_on_missing_token() -> None:
    assert filter_matches(f("t", "not_exists"), {}) is True


def test_regex_is_compiled_once_at_validation() -> None:
    flt = f("t", "=~", "^a+$")
    pattern = flt.prepared.pattern
    assert pattern is not None
    assert filter_matches(flt, {"t": "aaa"})
    assert flt.prepared.pattern is pattern


@pytest.mark.parametrize(
    ("op", "value", "fragment"),
    [
        ("in", "CA", "needs a list"),
        ("not_in", None, "needs a list"),
        ("exists", "x", "takes no value"),
        ("not_exists", ["a"], "takes no value"),
        ("==", None, "needs a single"),
        ("==", ["a", "b"], "needs a single"),
        (">", "abc", "numeric value"),
        (">", True, "numeric value"),
        ("=~", "(unclosed", "invalid regular expression"),
        ("=~", 5, "regular expression string"),
        ("like", "x", "Input should be"),
        ("==", {"a": 1}, "must be a string"),
    ],
)
def test_invalid_filters_are_rejected(op: str, value: Any, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        f("t", op, value)


@pytest.mark.parametrize("token", ["1abc", "caller-state", "", "a b"])
def test_token_names(token: str) -> None:
    with pytest.raises(ValidationError, match="invalid token name"):
        f(token, "exists")


def test_filters_are_hashable_and_equal_by_value() -> None:
    assert f("t", "in", ["a", "b"]) == f("t", "in", ("a", "b"))
    assert len({f("t", "in", ["a"]), f("t", "in", ["a"])}) == 1


@pytest.mark.parametrize(
    ("flt", "data", "text"),
    [
        (
            f("caller_state", "==", "CA"),
            {"caller_state": "NY"},
            "caller_state is 'NY', wanted == 'CA'",
        ),
        (f("caller_state", "==", "CA"), {}, "caller_state is missing"),
        (f("caller_state", "!=", "CA"), {}, "caller_state is missing"),
        (f("age", ">", 18), {"age": "abc"}, "age is 'abc', not a number, wanted > 18"),
        (f("age", ">=", 18), {"age": "12"}, "age is '12', wanted >= 18"),
        (f("st", "in", ["CA", "TX"]), {"st": "NY"}, "st is 'NY', wanted in ['CA', 'TX']"),
        (f("cid", "=~", "^900"), {"cid": "1800"}, "cid is '1800', wanted =~ '^900'"),
        (f("opt", "not_exists"), {"opt": "1"}, "opt is present ('1'), wanted not_exists"),
        (f("opt", "exists"), {}, "opt is missing"),
        (
            f("caller_state", "==", "CA"),
            {"caller_state": "CA"},
            "caller_state is 'CA': matches == 'CA'",
        ),
        (f("opt", "not_exists"), {}, "opt is missing: matches not_exists"),
    ],
)
def test_explain(flt: Filter, data: dict[str, str], text: str) -> None:
    assert explain(flt, data) == text


def test_explain_shortens_long_values() -> None:
    text = explain(f("t", "==", "x"), {"t": "y" * 500})
    assert len(text) < 120
    assert "..." in text


def test_describe() -> None:
    assert describe(f("a", "==", True)) == "a == 'true'"
    assert describe(f("a", "<=", 2.5)) == "a <= 2.5"
    assert describe(f("a", "exists")) == "a exists"
