"""JSON on the key press path: orjson, with the standard library as the fallback.

Every key press decodes an ARI event and encodes three call log rows (two event details and
the call's state snapshot for adoption after a restart). Profiled, the standard library's
encoder was the largest single cost of a press (``bench/results/profile.md``); orjson
encodes the same snapshot about 10x faster and decodes events about 2x faster.

The output is compact JSON text (``str``). Values JSON has no type for are written with
``str()`` (datetimes as ISO 8601). Where orjson refuses something the standard library takes
(encoding an integer beyond 64 bits or a lone surrogate; decoding NaN), the standard library
handles it. One difference remains: orjson decodes an integer beyond 64 bits as a float (the
standard library as an int); ARI sends none.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps", "dumps_bytes", "loads"]

_OPTIONS = orjson.OPT_NON_STR_KEYS
_stdlib_encode = json.JSONEncoder(default=str, separators=(",", ":")).encode


def dumps_bytes(value: Any) -> bytes:
    """``value`` as compact JSON, UTF-8 encoded."""
    try:
        return orjson.dumps(value, default=str, option=_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError: a value orjson does not take
        return _stdlib_encode(value).encode()  # ASCII: lone surrogates come out escaped


def dumps(value: Any) -> str:
    """``value`` as compact JSON text."""
    return dumps_bytes(value).decode()


def loads(data: str | bytes | bytearray) -> Any:
    """Decode JSON text; raises ``ValueError`` when it is not JSON."""
    try:
        return orjson.loads(data)
    except ValueError:
        # orjson is stricter on a few inputs the standard library takes (NaN, Infinity):
        # let the standard library decide, and give its error.
        return json.loads(data)
