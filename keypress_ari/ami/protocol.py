"""The Asterisk Manager Interface wire format as plain functions (no sockets).

After a banner line (``Asterisk Call Manager/11.0.0``), AMI sends messages: ``Key: Value``
lines ending in CRLF, a message ended by an empty line. Responses carry ``Response`` and the
``ActionID`` we sent; events carry ``Event``. A key may repeat (``ChanVariable``): its
values are kept in order, joined by a newline. Actions go the other way the same way.

Limits: a line over :data:`MAX_LINE` bytes or a message over :data:`MAX_MESSAGE` bytes is a
protocol error naming the limit (the client then reconnects), never unbounded buffering.
"""

from __future__ import annotations

from collections.abc import Mapping

MAX_LINE = 8192
MAX_MESSAGE = 64 * 1024

AmiMessage = dict[str, str]


class AmiProtocolError(Exception):
    """What the peer sent is not AMI, or breaks a limit."""


class AmiParser:
    """Feed bytes in, get whole messages out."""

    __slots__ = ("_buffer", "_current", "_size")

    def __init__(self) -> None:
        self._buffer = b""
        self._current: AmiMessage = {}
        self._size = 0

    def feed(self, data: bytes) -> list[AmiMessage]:
        self._buffer += data
        out: list[AmiMessage] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    raise AmiProtocolError(f"an AMI line over {MAX_LINE} bytes")
                return out
            raw, self._buffer = self._buffer[:end], self._buffer[end + 1:]
            if len(raw) > MAX_LINE:
                raise AmiProtocolError(f"an AMI line over {MAX_LINE} bytes")
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                if self._current:
                    out.append(self._current)
                self._current, self._size = {}, 0
                continue
            self._size += len(raw)
            if self._size > MAX_MESSAGE:
                raise AmiProtocolError(f"an AMI message over {MAX_MESSAGE} bytes")
            key, sep, value = line.partition(":")
            if not sep:  # e.g. command output without a key (older forms): keep it
                key, value = "Output", line
            key, value = key.strip(), value.strip()
            if key in self._current:
                self._current[key] += "\n" + value
            else:
                self._current[key] = value


def encode_action(name: str, action_id: str, fields: Mapping[str, str]) -> bytes:
    """One action; a value holding CR or LF is refused (it would inject headers)."""
    lines = [("Action", name), ("ActionID", action_id), *fields.items()]
    for key, value in lines:
        if any(c in str(value) for c in "\r\n") or any(c in key for c in "\r\n:"):
            raise ValueError(f"AMI field {key!r} may not hold a line break")
    return ("".join(f"{k}: {v}\r\n" for k, v in lines) + "\r\n").encode("utf-8")


def is_banner(line: bytes) -> bool:
    return line.startswith(b"Asterisk Call Manager/")
