"""The per-call state object: plain data, one per call, persistable as JSON.

Everything a call needs to carry on lives here (stage, legs, tokens, attempts, the prompt in
flight, the pending timeout as a wall-clock deadline), so that a later restart can adopt the
call from its snapshot. Behaviour lives in :mod:`keypress_ari.calls.call`; decisions in
:mod:`keypress_ari.calls.decide`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Stage(StrEnum):
    ENTERING = "entering"    # in Stasis, number not yet resolved
    PROMPTING = "prompting"  # the router's prompt is playing
    WAITING = "waiting"      # prompt done, press-1 timeout running
    ROUTING = "routing"      # choosing and dialling a buyer (the caller hears ringing)
    BRIDGED = "bridged"      # caller and buyer talk in the call's bridge
    ENDING = "ending"        # the daemon is ending the call (a last prompt may play)
    ENDED = "ended"


# Call data names every call has (filters may use them like any token).
CALLER_NUMBER = "caller_number"
CALLER_NAME = "caller_name"
DIALLED_NUMBER = "dialled_number"
NUMBER = "number"
ROUTER = "router"
BUYER = "buyer"


@dataclass(slots=True)
class CallState:
    call_id: str
    channel_id: str
    number: str = ""
    caller_number: str = ""
    router: str | None = None
    flow_group: str | None = None
    stage: Stage = Stage.ENTERING
    attempts: int = 0                      # prompts played so far
    tokens: dict[str, str] = field(default_factory=dict)
    data: dict[str, str] = field(default_factory=dict)  # call data + tokens, what filters see
    legs: dict[str, str] = field(default_factory=dict)
    disposition: str | None = None
    prompt_playback_id: str | None = None
    timer_generation: int = 0
    deadline: float | None = None          # epoch seconds when the press-1 timeout fires
    ended_by: str | None = None            # daemon | buyer, once known; else the caller
    answered: bool = False                 # the caller's channel was answered by the daemon
    buyer: str | None = None               # the buyer being dialled or bridged
    buyer_channel: str | None = None       # its leg
    buyer_entered_at: float | None = None  # epoch seconds the buyer entered the bridge
    tried: list[str] = field(default_factory=list)  # buyers dialled on this call, in order
    live_buyer_legs: dict[str, str] = field(default_factory=dict)  # channel id -> buyer
    bridge_id: str | None = None
    consumer_muted: bool = False
    consumer_held: bool = False
    final_playback_id: str | None = None   # the no-buyer prompt, after which the call ends
    seq: int = 0                           # last call log sequence number used
    mode: str = "stasis"                   # how the call reached us: stasis | fastagi | ami
    linkedid: str | None = None            # Asterisk's linkedid (the fastagi mode's key)
    owner: str | None = None               # the daemon that carries the call (cluster.name)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))  # never changes
    dirty: bool = False
    # started_at in ISO 8601, made once: a third of a snapshot's cost otherwise.
    _started_iso: str | None = field(default=None, init=False, repr=False, compare=False)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def set_tokens(self, tokens: dict[str, str]) -> None:
        self.tokens.update(tokens)
        self.data.update(tokens)
        self.dirty = True

    def move(self, stage: Stage) -> None:
        self.stage = stage
        self.dirty = True

    def snapshot(self) -> dict[str, Any]:
        """What is persisted in ``calls.state``: enough to rebuild this object."""
        started = self._started_iso
        if started is None:
            started = self._started_iso = self.started_at.isoformat()
        return {
            "call_id": self.call_id,
            "channel_id": self.channel_id,
            "number": self.number,
            "caller_number": self.caller_number,
            "router": self.router,
            "flow_group": self.flow_group,
            "stage": self.stage.value,
            "attempts": self.attempts,
            "tokens": dict(self.tokens),
            "data": dict(self.data),
            "legs": dict(self.legs),
            "disposition": self.disposition,
            "prompt_playback_id": self.prompt_playback_id,
            "deadline": self.deadline,
            "ended_by": self.ended_by,
            "answered": self.answered,
            "buyer": self.buyer,
            "buyer_channel": self.buyer_channel,
            "buyer_entered_at": self.buyer_entered_at,
            "tried": list(self.tried),
            "live_buyer_legs": dict(self.live_buyer_legs),
            "bridge_id": self.bridge_id,
            "consumer_muted": self.consumer_muted,
            "consumer_held": self.consumer_held,
            "final_playback_id": self.final_playback_id,
            "seq": self.seq,
            "mode": self.mode,
            "linkedid": self.linkedid,
            "owner": self.owner,
            "started_at": started,
        }

    @classmethod
    def from_snapshot(cls, snap: dict[str, Any]) -> CallState:
        return cls(
            call_id=snap["call_id"],
            channel_id=snap["channel_id"],
            number=snap.get("number", ""),
            caller_number=snap.get("caller_number", ""),
            router=snap.get("router"),
            flow_group=snap.get("flow_group"),
            stage=Stage(snap.get("stage", Stage.ENTERING)),
            attempts=int(snap.get("attempts", 0)),
            tokens=dict(snap.get("tokens", {})),
            data=dict(snap.get("data", {})),
            legs=dict(snap.get("legs", {})),
            disposition=snap.get("disposition"),
            prompt_playback_id=snap.get("prompt_playback_id"),
            deadline=snap.get("deadline"),
            ended_by=snap.get("ended_by"),
            answered=bool(snap.get("answered", False)),
            buyer=snap.get("buyer"),
            buyer_channel=snap.get("buyer_channel"),
            buyer_entered_at=snap.get("buyer_entered_at"),
            tried=list(snap.get("tried", [])),
            live_buyer_legs=dict(snap.get("live_buyer_legs", {})),
            bridge_id=snap.get("bridge_id"),
            consumer_muted=bool(snap.get("consumer_muted", False)),
            consumer_held=bool(snap.get("consumer_held", False)),
            final_playback_id=snap.get("final_playback_id"),
            seq=int(snap.get("seq", 0)),
            mode=snap.get("mode", "stasis"),
            linkedid=snap.get("linkedid"),
            owner=snap.get("owner"),
            started_at=datetime.fromisoformat(snap["started_at"]),
        )


def parse_stasis_args(args: list[str]) -> dict[str, str]:
    """``Stasis(app,k=v,...)`` arguments as a dict; arguments without ``=`` are ignored."""
    out: dict[str, str] = {}
    for arg in args:
        key, sep, value = arg.partition("=")
        key = key.strip()
        if sep and key:
            out[key] = value.strip()
    return out
