"""The FastAGI protocol functions (pure)."""

from __future__ import annotations

import pytest

from keypress_ari.agi.protocol import (
    AgiProtocolError,
    build_request,
    command,
    parse_header_line,
    parse_result_line,
    quote,
    usage_continues,
)

# What Asterisk 22 sends for AGI(agi://127.0.0.1:4573/keypress?digit=%23&leg=buyer,x,y z)
HEADER = [
    "agi_network: yes",
    "agi_network_script: keypress?digit=%23&leg=buyer",
    "agi_request: agi://127.0.0.1:4573/keypress?digit=%23&leg=buyer",
    "agi_channel: PJSIP/acme-00000004",
    "agi_uniqueid: 1733450000.12",
    "agi_callerid: 5551234",
    "agi_extension: 18005550100",
    "agi_arg_2: y z",
    "agi_arg_1: x",
]


def test_request_has_script_params_args_and_variables() -> None:
    request = build_request(HEADER)
    assert request.script == "keypress"
    assert request.params == {"digit": "#", "leg": "buyer"}
    assert request.args == ("x", "y z")
    assert request.channel == "PJSIP/acme-00000004"
    assert request.uniqueid == "1733450000.12"
    assert request.env["callerid"] == "5551234"


def test_request_from_agi_request_alone() -> None:
    request = build_request(["agi_request: agi://h:1/keypress?digit=1"])
    assert request.script == "keypress" and request.params == {"digit": "1"}


@pytest.mark.parametrize("lines, fragment", [
    (["garbage"], "not an AGI variable line"),
    (["agi_: x"], "not an AGI variable line"),
    (["agi_channel: X"], "no agi_network_script"),
])
def test_bad_request_says_what(lines: list[str], fragment: str) -> None:
    with pytest.raises(AgiProtocolError, match=fragment):
        build_request(lines)


def test_header_value_keeps_colons() -> None:
    assert parse_header_line("agi_request: agi://a:1/x") == ("request", "agi://a:1/x")


@pytest.mark.parametrize("line, code, result, data", [
    ("200 result=1 (18005550100)", 200, 1, "18005550100"),
    ("200 result=1 (a (nested) value)", 200, 1, "a (nested) value"),
    ("200 result=0", 200, 0, None),
    ("200 result=-1", 200, -1, None),
    ("200 result=0 endpos=8000", 200, 0, None),
    ("510 Invalid or unknown command", 510, None, None),
    ("511 Command Not Permitted on a dead channel or intercept routine", 511, None, None),
])
def test_result_lines(line: str, code: int, result: int | None, data: str | None) -> None:
    parsed = parse_result_line(line)
    assert (parsed.code, parsed.result, parsed.data) == (code, result, data)
    assert parsed.ok is (code == 200)


def test_result_garbage_is_an_error() -> None:
    with pytest.raises(AgiProtocolError):
        parse_result_line("HELLO")


def test_usage_block_start() -> None:
    assert usage_continues("520-Invalid command syntax.  Proper usage follows:")
    assert not usage_continues("520 End of proper usage.")


def test_quote_escapes_and_refuses_line_breaks() -> None:
    assert quote('a "b" \\c') == '"a \\"b\\" \\\\c"'
    for bad in ("a\nb", "a\rb", "a\0b"):
        with pytest.raises(ValueError):
            quote(bad)
    assert command("HANGUP", quote("PJSIP/x-1")) == 'HANGUP "PJSIP/x-1"\n'
    with pytest.raises(ValueError):
        command("EXEC Set", "x\n")
