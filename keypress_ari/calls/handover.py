"""Moving a call that ``Dial()`` bridged into the Stasis app, so that the Stasis mode carries
it from then on: the ami mode's way to do what AMI cannot (hold, play, continue routing).

The ami mode sees a press whose flow needs the Stasis app (:func:`needs_stasis`), turns the
call's state into a Stasis call's (:func:`to_stasis`: channel ids become uniqueids, the
buyer's leg a live buyer leg), tells the dispatcher to expect both legs
(:class:`Handover`) and redirects them with one AMI ``Redirect`` into the dialplan context
that runs ``Stasis()``. The dispatcher turns each leg's ``StasisStart`` into
:class:`HandedOver`; once both are in, the call bridges them and handles the press as a
Stasis call's, with the same call id, the same call log ``seq`` and the same conference
clock. Plain data and pure functions: the I/O is the ami mode's and the call's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from keypress_ari.calls.rules import Leg
from keypress_ari.calls.state import CallState, Stage
from keypress_ari.flows.model import Flow

# What only a call in the Stasis app can do (see the README's mode matrix).
STASIS_ONLY_ACTIONS = frozenset({"hold_consumer", "unhold_consumer", "play"})
# The buyer's name on a handed-over leg whose channel matched no buyer of the catalog.
UNLISTED_BUYER = "(unlisted)"


def needs_stasis(flow: Flow) -> str | None:
    """What in ``flow`` needs the call in the Stasis app, or None."""
    if flow.continue_routing:
        return "continue routing"
    for action in flow.call_control_actions:
        if action.kind in STASIS_ONLY_ACTIONS:
            return action.kind
    return None


@dataclass(slots=True)
class Handover:
    """A call on its way into the Stasis app, and the press that sent it there."""

    state: CallState      # already a Stasis call's state (:func:`to_stasis`)
    caller: str           # the caller leg's uniqueid (its ARI channel id)
    buyer: str | None     # the buyer leg's uniqueid
    leg: Leg              # who pressed
    digit: str
    duration_ms: int
    action: str | None = None  # an operator's action to run there instead of the press
    by: str = "console"
    arrived: set[str] = field(default_factory=set)

    def channels(self) -> list[str]:
        return [self.caller] if self.buyer is None else [self.caller, self.buyer]

    def arrive(self, channel_id: str) -> bool:
        """Note a leg in the Stasis app; True once every leg is in."""
        self.arrived.add(channel_id)
        return all(c in self.arrived for c in self.channels())


OPERATOR_ACTIONS = ("hangup", "mute_consumer", "unmute_consumer", "hold_consumer",
                    "unhold_consumer")


@dataclass(frozen=True, slots=True)
class OperatorAction:
    """An operator acted on a call from the console (one of ``OPERATOR_ACTIONS``): its
    caller's channel id, run by the call's own control code like a flow's action."""

    channel_id: str
    action: str
    by: str = "console"


@dataclass(frozen=True, slots=True)
class HandedOver:
    """A leg of a handed-over call entered the Stasis app (its StasisStart)."""

    channel_id: str


class StasisDoor(Protocol):
    """The Stasis mode's side of a handover (the dispatcher)."""

    def holds(self, channel_id: str) -> bool: ...
    def expect_handover(self, handover: Handover) -> None: ...
    def cancel_handover(self, handover: Handover) -> None: ...


def to_stasis(st: CallState, caller: str, buyer: str | None) -> None:
    """Make ``st`` (an ami call's) a bridged Stasis call's: ARI ids, the buyer's leg live."""
    st.mode = "stasis"
    st.channel_id = caller
    st.legs = {"caller": caller}
    st.live_buyer_legs = {}
    st.buyer_channel = buyer
    if buyer is not None:
        name = st.buyer or UNLISTED_BUYER
        st.buyer = name
        st.legs[f"buyer:{name}:1"] = buyer
        st.live_buyer_legs[buyer] = name
        st.tried = [name]
    st.answered = True  # Dial() answered it
    st.bridge_id = None
    st.move(Stage.BRIDGED)
