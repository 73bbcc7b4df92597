"""The call log's ops: what calls queue, as plain dataclasses. ``store.log_rows`` says which
SQL row and which JSON record each becomes; ``store.log_writer`` moves them.

An op is never changed once emitted. The ops built for every key press (``CallEvent``,
``CallUpdated``) are not declared frozen all the same: a frozen dataclass's ``__init__`` sets
each field through ``object.__setattr__`` and costs 5x as much (0.2 vs 1.0 us here), three
times per press."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class CallOpened:
    call_id: str
    number: str
    caller_number: str
    router: str | None
    channel_id: str
    stage: str
    started_at: datetime


@dataclass(slots=True)
class CallEvent:
    call_id: str
    seq: int | None  # None: not one of the call's numbered events (e.g. log_rejected)
    at: datetime
    leg: str | None
    kind: str  # an EventKind (calllog.kinds); read back from the journal as its value
    digit: str | None
    flow: str | None
    detail: dict[str, Any]


@dataclass(slots=True)
class CallUpdated:
    """New values for a call row; ``ended_at`` set means the call is closed."""

    call_id: str
    stage: str
    tokens: dict[str, str]
    legs: dict[str, str]
    disposition: str | None
    state: dict[str, Any]
    ended_at: datetime | None = None
    ended_by: str | None = None
    end_reason: str | None = None


@dataclass(frozen=True, slots=True)
class CallerBlocked:
    """A flow's block_caller action: the number goes on the blocklist."""

    caller_number: str
    reason: str
    call_id: str | None


@dataclass(frozen=True, slots=True)
class WebhookQueued:
    """A rendered webhook to deliver (``webhooks.render.queued_op`` builds one). ``body`` is
    the exact text that is signed and sent; ``idempotency_key`` a UUID, stable across retries
    (a batch written twice stores the row once)."""

    call_id: str
    flow: str | None
    url: str
    method: str
    headers: dict[str, str]
    body: str
    idempotency_key: str


Op = CallOpened | CallEvent | CallUpdated | CallerBlocked | WebhookQueued


class OpSink(Protocol):
    """What queues ops: the call log writer, or a call context (behind its staged rows)."""

    def emit(self, op: Op) -> None: ...
