"""Blocked callers: an in-memory set checked at call entry, written through the call log queue.

The set is loaded at start; a flow's ``block_caller`` adds to it at once (the very next
call from that number is rejected) and queues the durable row.
"""

from __future__ import annotations

from collections.abc import Iterable

from keypress_ari.calllog.ops import CallerBlocked, OpSink
from keypress_ari.store.port import CallStore


class Blocklist:
    __slots__ = ("_numbers",)

    def __init__(self, numbers: Iterable[str] = ()) -> None:
        self._numbers = set(numbers)

    def __contains__(self, number: str) -> bool:
        return bool(number) and number in self._numbers

    def __len__(self) -> int:
        return len(self._numbers)

    def add(self, writer: OpSink, number: str, reason: str, call_id: str | None) -> None:
        self._numbers.add(number)
        writer.emit(CallerBlocked(number, reason, call_id))

    async def load(self, store: CallStore) -> None:
        """Replace the set with what the store holds."""
        self._numbers = await store.blocked_numbers()
