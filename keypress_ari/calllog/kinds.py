"""The kinds of call log rows (``call_events.kind``), and what a key press row's detail says.

Every row a call writes has one of these kinds; the writer stores the value (a plain string
in PostgreSQL), the metrics count presses and actions by kind, the admin API and the CLI
show the outcome of a press through :func:`press_outcome`. A new kind is added here first.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal


class EventKind(StrEnum):
    # the call
    CALL_STARTED = "call_started"
    CALL_ENDED = "call_ended"
    ADOPTED = "adopted"
    MOVING_TO_STASIS = "moving_to_stasis"  # the ami mode redirects the call into the app
    ENTERED_STASIS = "entered_stasis"      # ... and its legs are in: the Stasis mode carries it
    ANSWERED = "answered"
    BLOCKED_CALLER = "blocked_caller"
    UNKNOWN_NUMBER = "unknown_number"
    TOKENS_SET = "tokens_set"
    DISPOSITION = "disposition"
    HANGUP = "hangup"
    ERROR = "error"
    OPERATOR_ACTION = "operator_action"  # from the console (who, what), then what it did
    # the router's key press stage
    PROMPT_STARTED = "prompt_started"
    PROMPT_FINISHED = "prompt_finished"
    PROMPT_STOPPED = "prompt_stopped"
    REPROMPT = "reprompt"
    TIMEOUT = "timeout"
    TIMEOUT_DEFERRED = "timeout_deferred"
    NO_KEY_PRESS = "no_key_press"
    # key presses and what they triggered
    KEY_PRESS = "key_press"
    RATE_LIMITED = "rate_limited"
    CALL_CONTROL_ACTION = "call_control_action"
    WEBHOOK_QUEUED = "webhook_queued"
    # buyers
    CONTINUE_ROUTING = "continue_routing"
    DIALING = "dialing"
    BUYER_SKIPPED = "buyer_skipped"
    BUYER_RINGING = "buyer_ringing"
    BUYER_ANSWERED = "buyer_answered"
    BUYER_FAILED = "buyer_failed"
    BUYER_DROPPED = "buyer_dropped"
    BUYER_HANGUP = "buyer_hangup"
    BRIDGED = "bridged"
    NO_BUYER_AVAILABLE = "no_buyer_available"
    # the log itself: an op PostgreSQL refused, set aside (never numbered)
    LOG_REJECTED = "log_rejected"


# Rows that carry the call mode they happened in (``detail.mode``: stasis, fastagi, ami):
# the presses and what they triggered (a handed-over ami call's later rows say stasis).
MODE_KINDS = frozenset({
    EventKind.KEY_PRESS, EventKind.RATE_LIMITED, EventKind.CALL_CONTROL_ACTION,
    EventKind.TOKENS_SET, EventKind.DISPOSITION, EventKind.WEBHOOK_QUEUED,
    EventKind.CONTINUE_ROUTING, EventKind.HANGUP, EventKind.MOVING_TO_STASIS,
    EventKind.OPERATOR_ACTION,
})

PressOutcome = Literal["matched", "no_match", "ignored"]
PRESS_OUTCOMES: tuple[PressOutcome, ...] = ("matched", "no_match", "ignored")


def press_outcome(detail: Mapping[str, Any]) -> PressOutcome:
    """What a ``key_press`` row says happened: ``ignored`` (a duplicate, over the rate limit,
    past the conference time limit, or the call was in no key press stage) wins over
    ``matched`` (a flow ran), else ``no_match``."""
    if detail.get("ignored"):
        return "ignored"
    return "matched" if detail.get("matched") else "no_match"
