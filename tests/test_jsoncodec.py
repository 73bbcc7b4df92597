"""The JSON codec of the key press path: orjson, and the standard library where orjson
refuses a value, so that no value the standard library takes is lost."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import Enum

import pytest

from keypress_ari import jsoncodec


class Stage(Enum):
    BRIDGED = "bridged"


def test_compact_text_that_the_standard_library_reads_back() -> None:
    value = {"call_id": "c-1", "n": 3, "ok": True, "none": None, "f": 1.5,
             "tokens": {"sub_id": "é ü"}, "legs": ["a", "b"]}
    text = jsoncodec.dumps(value)
    assert isinstance(text, str) and " " not in text.replace("é ü", "")
    assert json.loads(text) == value
    assert jsoncodec.dumps_bytes(value) == text.encode()
    assert jsoncodec.loads(text) == value
    assert jsoncodec.loads(text.encode()) == value


def test_values_json_has_no_type_for() -> None:
    at = datetime(2026, 11, 24, 19, 0, tzinfo=UTC)
    decoded = json.loads(jsoncodec.dumps({"at": at, "stage": Stage.BRIDGED, "obj": object}))
    assert datetime.fromisoformat(decoded["at"]) == at
    assert decoded["stage"] == "bridged"
    assert decoded["obj"] == str(object)


@pytest.mark.parametrize("value", [
    {"big": 2**70},           # beyond 64 bits: orjson refuses it
    {"text": "a\ud800b"},     # a lone surrogate: orjson refuses it
    {1: "non-str key"},
])
def test_what_orjson_refuses_the_standard_library_writes(value: object) -> None:
    text = jsoncodec.dumps(value)
    assert json.loads(text) == json.loads(json.dumps(value, default=str))
    assert json.loads(jsoncodec.dumps_bytes(value)) == json.loads(text)


def test_decoding_what_only_the_standard_library_reads() -> None:
    nan = jsoncodec.loads("[NaN]")[0]  # orjson refuses NaN; the standard library reads it
    assert nan != nan


def test_integers_beyond_64_bits_decode_as_floats() -> None:
    """The one documented difference: orjson reads them as floats (ARI sends none)."""
    assert jsoncodec.loads('{"n": 123456789012345678901234567890}')["n"] == pytest.approx(
        1.2345678901234568e29)


def test_not_json_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        jsoncodec.loads("{not json")
    with pytest.raises(ValueError):
        jsoncodec.loads(b"\xff\xfe")
