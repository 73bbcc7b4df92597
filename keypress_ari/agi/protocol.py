"""The FastAGI protocol as plain functions: the request Asterisk sends when a channel runs
``AGI(agi://HOST:PORT/SCRIPT?QUERY,ARG1,...)``, the commands we send back and their results.

What Asterisk sends (res_agi, Asterisk 22): ``agi_KEY: VALUE`` lines (``agi_network``,
``agi_network_script``, ``agi_request``, ``agi_channel``, ``agi_uniqueid``, ``agi_callerid``,
``agi_dnid``, ``agi_context``, ``agi_extension``, ``agi_arg_1`` ...), then an empty line. Each
command is one line; its answer ``200 result=N [(DATA)] [endpos=...]`` or ``510 ...``,
``511 ...``, or ``520-...`` lines up to ``520 End of proper usage.``. When the channel hangs up
while the script runs, Asterisk writes ``HANGUP`` on a line of its own (AGISIGHUP).

Nothing here reads a socket: the server (``agi.server``) feeds lines in, with its limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

MAX_LINE = 8192          # bytes in one line Asterisk sends
MAX_HEADER_LINES = 128   # an AGI request has ~25 variables plus its arguments
MAX_USAGE_LINES = 64     # lines of a 520 usage answer


class AgiProtocolError(Exception):
    """What the peer sent is not FastAGI (or breaks a limit); the message names what."""


@dataclass(frozen=True, slots=True)
class AgiRequest:
    """One FastAGI request: its ``agi_*`` variables (without the prefix), the script path,
    the query parameters of the ``agi://`` URL, and the positional arguments."""

    env: dict[str, str]
    script: str
    params: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()

    @property
    def channel(self) -> str:
        return self.env.get("channel", "")

    @property
    def uniqueid(self) -> str:
        return self.env.get("uniqueid", "")


def parse_header_line(line: str) -> tuple[str, str]:
    """``agi_channel: PJSIP/a-0001`` -> ("channel", "PJSIP/a-0001")."""
    key, sep, value = line.partition(":")
    if not sep or not key.startswith("agi_") or len(key) < 5:
        raise AgiProtocolError(f"not an AGI variable line: {line[:80]!r}")
    return key[4:], value.strip()


def build_request(lines: list[str]) -> AgiRequest:
    """The request from its header lines (without the empty line that ends them)."""
    env: dict[str, str] = {}
    args: dict[int, str] = {}
    for line in lines:
        key, value = parse_header_line(line)
        if key.startswith("arg_") and key[4:].isdigit():
            args[int(key[4:])] = value
        else:
            env[key] = value
    if "network_script" not in env and "request" not in env:
        raise AgiProtocolError("no agi_network_script or agi_request in the AGI request")
    if env.get("network_script"):
        script_and_query = env["network_script"]
    else:
        url = urlsplit(env["request"])
        script_and_query = url.path.lstrip("/") + ("?" + url.query if url.query else "")
    script, _, query = script_and_query.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    ordered = tuple(args[i] for i in sorted(args))
    return AgiRequest(env=env, script=script, params=params, args=ordered)


@dataclass(frozen=True, slots=True)
class AgiResult:
    """A command's answer: ``code`` 200 on success; ``result`` the number after
    ``result=``; ``data`` what stood in parentheses (a variable's value), if anything."""

    code: int
    result: int | None
    data: str | None
    text: str

    @property
    def ok(self) -> bool:
        return self.code == 200


_RESULT = re.compile(r"^(\d{3})[ -](.*)$")
_RESULT_FIELD = re.compile(r"result=(-?\d+)(?:\s+\((.*)\))?")


def parse_result_line(line: str) -> AgiResult:
    """One answer line (a 520 usage block is joined by the caller first)."""
    m = _RESULT.match(line)
    if m is None:
        raise AgiProtocolError(f"not an AGI answer: {line[:80]!r}")
    code, rest = int(m.group(1)), m.group(2)
    result = data = None
    field_ = _RESULT_FIELD.search(rest) if code == 200 else None
    if field_ is not None:
        result = int(field_.group(1))
        data = field_.group(2)
    return AgiResult(code, result, data, rest)


def usage_continues(line: str) -> bool:
    """A ``520-`` line opens a usage block that ends at ``520 End of proper usage.``."""
    return line.startswith("520-")


def quote(value: str) -> str:
    """One command argument, quoted for res_agi's parser (``\\`` and ``"`` escaped)."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError("an AGI argument may not hold a line break or NUL")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def command(*words: str) -> str:
    """A command line: the verb words as they are, arguments quoted by the caller."""
    line = " ".join(words)
    if "\n" in line or "\r" in line:
        raise ValueError("an AGI command may not hold a line break")
    return line + "\n"
