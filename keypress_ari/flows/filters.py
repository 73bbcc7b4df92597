"""Filter evaluation against a call's data (token name -> string value). Pure functions.

Semantics (``v`` is the filter's value, ``x`` the call's value for the token):

* a missing token makes every op false except ``not_exists`` — including ``!=`` and
  ``not_in``: "caller_state != CA" does not match a call with no caller_state. Use
  ``not_exists`` (in another flow) to handle calls without the token;
* ``==`` / ``!=``: exact, case-sensitive string comparison of ``x`` with ``str(v)``
  (booleans as ``true`` / ``false``, so ``value: 1`` matches ``"1"`` but not ``"1.0"``);
* ``>``, ``<``, ``>=``, ``<=``: numeric; false when ``x`` does not parse as a number
  (``v`` is checked to be numeric when the filter is validated);
* ``contains``: ``str(v)`` is a substring of ``x``;
* ``in`` / ``not_in``: ``x`` is / is not one of the listed strings;
* ``=~`` / ``!~``: the expression is / is not found anywhere in ``x`` (``re.search``; anchor
  it with ``^...$`` for a full match);
* ``exists`` / ``not_exists``: the token is present (even empty) / absent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from keypress_ari.flows.model import Filter
from keypress_ari.flows.syntax import PreparedValue, parse_number

_Check = Callable[[PreparedValue, str], bool]


def _ordering(compare: Callable[[float, float], bool]) -> _Check:
    def check(p: PreparedValue, actual: str) -> bool:
        number = parse_number(actual)
        return number is not None and p.number is not None and compare(number, p.number)

    return check


def _search(p: PreparedValue, actual: str) -> bool:
    return p.pattern is not None and p.pattern.search(actual) is not None


_CHECKS: dict[str, _Check] = {
    "==": lambda p, x: x == p.text,
    "!=": lambda p, x: x != p.text,
    "contains": lambda p, x: p.text in x,
    "in": lambda p, x: x in p.choices,
    "not_in": lambda p, x: x not in p.choices,
    "=~": _search,
    "!~": lambda p, x: not _search(p, x),
    ">": _ordering(lambda a, b: a > b),
    "<": _ordering(lambda a, b: a < b),
    ">=": _ordering(lambda a, b: a >= b),
    "<=": _ordering(lambda a, b: a <= b),
    "exists": lambda p, x: True,
}


def filter_matches(f: Filter, data: Mapping[str, str]) -> bool:
    """Whether ``f`` holds for ``data``. Never raises for any data."""
    actual = data.get(f.token)
    if actual is None:
        return f.op == "not_exists"
    if f.op == "not_exists":
        return False
    return _CHECKS[f.op](f.prepared, actual)


def _shorten(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def describe(f: Filter) -> str:
    """The filter as text, e.g. ``caller_state == 'CA'`` or ``age >= 18``."""
    if f.op in ("exists", "not_exists"):
        return f"{f.token} {f.op}"
    if isinstance(f.value, tuple):
        return f"{f.token} {f.op} {list(f.value)!r}"
    shown = f.prepared.text if f.op in (">", "<", ">=", "<=") else repr(f.prepared.text)
    return f"{f.token} {f.op} {shown}"


def _wanted(f: Filter) -> str:
    return describe(f)[len(f.token) + 1 :]


def explain(f: Filter, data: Mapping[str, str]) -> str:
    """Why ``f`` fails (or holds) for ``data``, for logs and the call log.

    Examples: ``caller_state is 'NY', wanted == 'CA'``; ``caller_state is missing``;
    ``age is 'abc', not a number, wanted > 18``; ``caller_state is 'CA': matches == 'CA'``.
    """
    actual = data.get(f.token)
    if actual is None:
        if f.op == "not_exists":
            return f"{f.token} is missing: matches not_exists"
        return f"{f.token} is missing"
    shown = _shorten(actual)
    if filter_matches(f, data):
        return f"{f.token} is {shown}: matches {_wanted(f)}"
    if f.op == "not_exists":
        return f"{f.token} is present ({shown}), wanted not_exists"
    if f.op in (">", "<", ">=", "<=") and parse_number(actual) is None:
        return f"{f.token} is {shown}, not a number, wanted {_wanted(f)}"
    return f"{f.token} is {shown}, wanted {_wanted(f)}"
