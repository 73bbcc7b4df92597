"""What the call core needs from storage, as a Protocol: the daemon's implementation is
:class:`~keypress_ari.store.pg_store.PgStore` (PostgreSQL); unit tests of call logic and
fault injection use :class:`~keypress_ari.store.memory_store.MemoryStore`. Integration tests
always run on PostgreSQL.

Every call of a method may raise (the database is away): callers retry or fall back, they
never lose what they hold (the call log writer keeps its batch).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from keypress_ari.calllog.ops import Op


@dataclass(frozen=True, slots=True)
class OpenCall:
    """A call the log says is still open: its last persisted snapshot and the highest
    ``seq`` written for it (rows may have followed the snapshot)."""

    state: dict[str, Any]
    last_seq: int


class LogStore(Protocol):
    async def write_ops(self, ops: Sequence[Op]) -> None:
        """Write ``ops`` in order in one transaction: all of them or none."""


class CallStore(LogStore, Protocol):
    async def ping(self, timeout: float) -> bool:
        """The database answers within ``timeout`` seconds (never raises)."""

    async def schema_version(self) -> int | None:
        """The newest migration applied (None: an empty database)."""

    async def blocked_numbers(self) -> set[str]: ...

    async def open_calls(self) -> list[OpenCall]: ...


class BuyerLegStore(Protocol):
    """Buyer legs held by every daemon sharing one database (``buyer_legs``): a buyer's
    ``max_concurrency`` counts them all. Each row is one daemon's, with a lease it renews."""

    async def reserve(self, buyer: str, leg: str, limit: int) -> int:
        """Under the buyer's lock: how many live legs the buyer has besides ``leg``; when that
        is below ``limit`` the leg is reserved (in the same statement)."""

    async def release(self, leg: str) -> None: ...

    async def renew(self, held: Mapping[str, str], keep: Collection[str]) -> None:
        """Renew the lease of this daemon's ``held`` legs (leg → buyer; inserted when
        missing: held while the database was away) and drop its rows not in ``keep``."""
