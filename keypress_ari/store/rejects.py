"""Poison ops: what the call log writer does when PostgreSQL rejects the data of one op.

A batch that fails because PostgreSQL cannot be reached (or is shutting down, out of
resources, read-only, missing the schema ...) is retried forever: an outage must lose
nothing. When PostgreSQL refuses the *data* of an op (a jsonb holding ``\\u0000``, a value
too long, a constraint violated: :func:`is_rejection`), retrying would block every later op
forever, so :class:`Isolation` finds the op(s) it refuses and sets them aside:

* The batch is cut into groups, an op with the ``WebhookQueued`` ops right after it (they
  commit together, as ``CallLogWriter._take`` keeps them). The groups are bisected: the left
  half is written in one transaction (and bisected in turn if it is rejected) before the
  right half, so what is committed keeps the queue's order and everything but the refused ops
  is committed. A group refused as a whole is split into its ops, each written on its own:
  a refused key press does not take its webhooks with it, nor the reverse (only then are they
  no longer atomic; with the journal a crash meanwhile replays the batch, which is harmless).
* An op PostgreSQL refuses on its own is *set aside*: with a journal, appended (fsynced) as
  one JSON line to ``rejected-ops.jsonl`` in the journal directory, ``{"at", "sqlstate",
  "error", "op"}`` where ``op`` is the journal's encoding (:func:`read_rejected` decodes
  them, to fix and ``emit`` again by hand); counted; logged at error level with the call id,
  the op's kind and PostgreSQL's message (never the op's data: webhook headers and bodies may
  hold secrets); and noted in the call's own log by a ``log_rejected`` call_events row
  (``seq`` NULL, detail ``{"op": kind, "error": message}``), written right away so it sits
  where the op would have been; a failure to write that row is only logged.
* Any other failure during isolation (PostgreSQL went away, the file cannot be written) ends
  it: the ops settled so far (committed or set aside) count as done, the rest is retried like
  any failed batch. After a crash before the batch is acknowledged in the journal, it is
  replayed: committed ops are idempotent, a set aside op is set aside (and noted) again.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import structlog

from keypress_ari.calllog.kinds import EventKind
from keypress_ari.calllog.ops import CallEvent
from keypress_ari.store.log_rows import decode_op, encode_op, is_webhook

log = structlog.get_logger("keypress.calllog")

REJECTED_FILE = "rejected-ops.jsonl"

# PostgresError classes that say nothing about the op's data: retried, never set aside.
RETRIED = (
    asyncpg.exceptions.PostgresConnectionError,  # 08: connection lost or refused
    asyncpg.exceptions.InsufficientResourcesError,  # 53: disk full, too many connections
    asyncpg.exceptions.OperatorInterventionError,  # 57: admin/crash shutdown, cannot connect
    asyncpg.exceptions.PostgresSystemError,  # 58: I/O error
    asyncpg.exceptions.TransactionRollbackError,  # 40: serialization failure, deadlock
    asyncpg.exceptions.InvalidTransactionStateError,  # 25: read-only (a standby)
    asyncpg.exceptions.SyntaxOrAccessError,  # 42: schema missing, no privilege
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,  # 55: lock not available
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # 28: authentication
    asyncpg.exceptions.InvalidCatalogNameError,  # 3D: no such database
    asyncpg.exceptions.InvalidCachedStatementError,  # the schema changed under a statement
    asyncpg.exceptions.ConfigFileError,  # F0
    asyncpg.exceptions.InternalServerError,  # XX
)

_CLIENT_ARGUMENT = re.compile(r"^invalid input for query argument \$\d+")


def is_rejection(exc: BaseException) -> bool:
    """PostgreSQL (or asyncpg's encoder) refused the data written; anything else, such as
    ``OSError``, ``TimeoutError``, ``asyncpg.InterfaceError`` (pool closing) or a
    :data:`RETRIED` class, is a failure to reach PostgreSQL."""
    return isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, RETRIED)


def op_kind(op: Any) -> str:
    """``CallEvent:key_press``, ``CallOpened``, ``WebhookQueued`` ..."""
    kind = type(op).__name__
    event = getattr(op, "kind", None)
    return f"{kind}:{event}" if isinstance(event, str) else kind


def message(exc: BaseException) -> str:
    """PostgreSQL's primary message, without its DETAIL (which may quote the data). asyncpg's
    own encoding errors quote the argument: only which argument is kept."""
    if not isinstance(exc, asyncpg.PostgresError):
        return str(exc)[:500]
    text = getattr(exc, "message", None) or (str(exc.args[0]) if exc.args else str(exc))
    if (m := _CLIENT_ARGUMENT.match(text)) is not None:
        text = m.group(0) + " (value withheld)"
    return text.replace("\x00", "")[:500]


def record(op: Any, error: str, sqlstate: str | None) -> bytes:
    """The ``rejected-ops.jsonl`` line for ``op``."""
    head = json.dumps({"at": datetime.now(UTC).isoformat(), "sqlstate": sqlstate,
                       "error": error}, separators=(",", ":"))
    return head[:-1].encode() + b',"op":' + encode_op(op) + b"}\n"


def read_rejected(path: Path | str) -> list[Any]:
    """The ops set aside in a ``rejected-ops.jsonl`` file, in order."""
    with open(path, encoding="utf-8") as f:
        return [decode_op(json.dumps(json.loads(line)["op"]).encode())
                for line in f if line.strip()]


def _append(path: Path, line: bytes) -> None:
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        written = 0
        while written < len(line):
            written += os.write(fd, line[written:])
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class Isolation:
    """Writes one batch, settling it op by op if PostgreSQL rejects it (module docstring).

    ``write`` writes ops in one transaction (a webhook op commits with the op before it);
    ``directory`` is where ``rejected-ops.jsonl`` goes (None: nowhere).
    """

    def __init__(self, write: Callable[[list[Any]], Awaitable[None]], *,
                 directory: Path | None) -> None:
        self._write = write
        self.file = directory / REJECTED_FILE if directory is not None else None
        self.settled = 0  # ops from the head of the last batch committed or set aside
        self.written = 0  # ops of the last batch committed
        self.rejected = 0  # ops set aside, in all

    async def write(self, batch: Sequence[Any]) -> int:
        """Write ``batch`` in one transaction, or, if PostgreSQL rejects it, isolate the ops
        it refuses; returns how many ops were committed. Raises on any other failure (then
        ``settled`` tells how many ops from the head are done)."""
        self.settled = self.written = 0
        try:
            await self._write(list(batch))
        except Exception as exc:
            if not is_rejection(exc):
                raise
            await self._isolate(batch, exc)
            return self.written
        self.settled = self.written = len(batch)
        return self.written

    async def _isolate(self, batch: Sequence[Any], exc: BaseException) -> None:
        groups: list[list[Any]] = []
        for op in batch:
            if groups and is_webhook(op):
                groups[-1].append(op)
            else:
                groups.append([op])
        await self._settle(groups, exc)

    async def _settle(self, groups: list[list[Any]], exc: BaseException) -> None:
        if len(groups) == 1:
            if len(groups[0]) == 1:
                await self._set_aside(groups[0][0], exc)
                return
            groups = [[op] for op in groups[0]]
        mid = len(groups) // 2
        for half in (groups[:mid], groups[mid:]):
            ops = [op for group in half for op in group]
            try:
                await self._write(ops)
            except Exception as err:
                if not is_rejection(err):
                    raise
                await self._settle(half, err)
            else:
                self.settled += len(ops)
                self.written += len(ops)

    async def _set_aside(self, op: Any, exc: BaseException) -> None:
        kind, error = op_kind(op), message(exc)
        sqlstate = getattr(exc, "sqlstate", None)
        call_id = getattr(op, "call_id", None)
        if self.file is not None:  # an OSError here: not settled, the op is retried
            await asyncio.to_thread(_append, self.file, record(op, error, sqlstate))
        self.settled += 1
        self.rejected += 1
        log.error("CALL LOG OP REJECTED by PostgreSQL: set aside, the call log carries on",
                  call_id=call_id, op=kind, sqlstate=sqlstate, error=error,
                  kept_in=str(self.file) if self.file is not None else None)
        if call_id is None:
            return
        at = getattr(op, "at", None) if type(op) is CallEvent else None
        note = CallEvent(call_id, None, at or datetime.now(UTC), None, EventKind.LOG_REJECTED,
                         None, getattr(op, "flow", None), {"op": kind, "error": error})
        try:
            await self._write([note])
        except Exception as err:
            log.warning("call log: could not record the rejected op in the call's log",
                        call_id=call_id, op=kind, error=message(err))
