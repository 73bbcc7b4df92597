"""Syntax of catalog values: names, tokens, keys, media, dispositions, numbers.

* names of flow groups, routers, buyers and flows: ``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}``
  (no spaces, so a flow name can never look like a generated ``key 1 #2`` label);
* token names (filters, extra tokens): ``[A-Za-z_][A-Za-z0-9_]*``;
* dispositions: lower snake case, ``[a-z][a-z0-9_]{0,63}`` (e.g. ``not_interested``);
* keys: ``0``-``9``, ``*``, ``#`` or ``no_key_press``;
* media (router prompt, ``play``): an ARI media URI ``scheme:rest`` such as ``sound:beep``;
* buyer endpoint: an Asterisk dial string ``Tech/resource`` (``Local/answer@keypress-buyers``);
* numbers: digits with an optional leading ``+`` (matched exactly, no normalisation).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TOKEN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DISPOSITION_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MEDIA_RE = re.compile(r"^[a-z][a-z0-9+.-]*:\S+$")
ENDPOINT_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*/\S+$")
NUMBER_RE = re.compile(r"^\+?[0-9]{1,20}$")
NO_KEY_PRESS = "no_key_press"
KEYS = frozenset([*"0123456789*#", NO_KEY_PRESS])

FilterOp = Literal[
    "==", "!=", "=~", "!~", ">", "<", ">=", "<=",
    "contains", "in", "not_in", "exists", "not_exists",
]  # fmt: skip
ORDERING_OPS = frozenset([">", "<", ">=", "<="])
ActionKind = Literal[
    "mute_consumer", "unmute_consumer", "hold_consumer", "unhold_consumer",
    "block_caller", "play", "hangup",
]  # fmt: skip
PlayTarget = Literal["consumer", "buyer", "both"]


def check(pattern: re.Pattern[str], value: str, what: str) -> str:
    if not pattern.match(value):
        raise ValueError(f"invalid {what} {value!r}: must match {pattern.pattern}")
    return value


def scalar_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _syntax(pattern: re.Pattern[str], what: str) -> AfterValidator:
    return AfterValidator(lambda v: check(pattern, v, what))


Name = Annotated[str, _syntax(NAME_RE, "name")]
TokenName = Annotated[str, _syntax(TOKEN_RE, "token name")]
Disposition = Annotated[str, _syntax(DISPOSITION_RE, "disposition")]
Media = Annotated[str, _syntax(MEDIA_RE, "media")]
Endpoint = Annotated[str, _syntax(ENDPOINT_RE, "endpoint")]


@dataclass(frozen=True, slots=True)
class PreparedValue:
    """A filter value ready for matching: ``text`` for string ops (booleans as ``true`` /
    ``false``), ``number`` for ``> < >= <=``, ``choices`` for ``in``/``not_in``, ``pattern``
    (compiled once) for ``=~``/``!~``."""

    text: str = ""
    number: float | None = None
    choices: frozenset[str] = frozenset()
    pattern: re.Pattern[str] | None = None


def parse_number(text: str) -> float | None:
    """``float(text)``, or None when it is not a number."""
    try:
        return float(text)
    except ValueError:
        return None
