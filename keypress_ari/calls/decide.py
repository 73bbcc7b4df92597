"""Pure decisions of the key press stage: what a press or a timeout leads to.

No I/O and no clock: these take the flow group, the key and the call data and return plain
data that :mod:`keypress_ari.calls.call` carries out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from keypress_ari.flows.match import Matched, NoMatch, match
from keypress_ari.flows.model import FlowGroup

NO_KEY_PRESS = "no_key_press"


@dataclass(frozen=True, slots=True)
class RunFlow:
    """Carry out a matched flow."""

    matched: Matched
    reason: str
    no_key_press: bool = False  # reached through the no-key-press path


@dataclass(frozen=True, slots=True)
class Reprompt:
    """No flow matched and attempts remain: play the prompt again."""

    attempt: int
    no_match: NoMatch


@dataclass(frozen=True, slots=True)
class ContinueRouting:
    """No usable key press and no no_key_press flow ran: route the call to a buyer."""

    reason: str


Decision = RunFlow | Reprompt | ContinueRouting


def decide_press(
    group: FlowGroup, key: str, data: Mapping[str, str], attempts: int
) -> tuple[Matched | NoMatch, Decision]:
    """A key pressed at the router prompt, after ``attempts`` prompts were played.

    ``max_attempts`` is how many presses the caller gets: after that many unmatched presses
    the call takes the no-key-press path.
    """
    result = match(group, key, data)
    if isinstance(result, Matched):
        return result, RunFlow(result, "key press")
    if attempts < group.max_attempts:
        return result, Reprompt(attempts + 1, result)
    return result, decide_no_key_press(group, data, f"{attempts} presses matched no flow")


def decide_no_key_press(group: FlowGroup, data: Mapping[str, str], reason: str) -> Decision:
    """Nothing (usable) was pressed: run the ``no_key_press`` flow or continue routing."""
    if not group.redirect_no_key_press:
        return ContinueRouting(f"{reason}; redirect_no_key_press is off")
    result = match(group, NO_KEY_PRESS, data)
    if isinstance(result, Matched):
        return RunFlow(result, reason, no_key_press=True)
    return ContinueRouting(f"{reason}; {result.reason}")
