"""Pick the flow for a key press. Pure.

``match(group, key, data)`` looks the key up in the group's prebuilt index and returns the first
flow (file order) whose filters all hold for the call's data. On the hit path it allocates
nothing but the ``Matched`` result: no regex compiling, no sorting, no explanation strings.
Only a miss builds explanations (``NoMatch.misses``, one per candidate flow: its first failing
filter).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from keypress_ari.flows.filters import explain, filter_matches
from keypress_ari.flows.model import Filter, Flow, FlowGroup


@dataclass(frozen=True, slots=True)
class Matched:
    flow: Flow
    position: int
    label: str


@dataclass(frozen=True, slots=True)
class Miss:
    """A candidate flow that did not match: its first failing ``filter`` and ``why``."""

    position: int
    label: str
    filter: Filter
    why: str


@dataclass(frozen=True, slots=True)
class NoMatch:
    key: str
    misses: tuple[Miss, ...] = ()

    @property
    def reason(self) -> str:
        """``no flow for key 5`` or ``2 flows for key 1, none matched: <label> (<why>); ...``."""
        if not self.misses:
            return f"no flow for key {self.key}"
        count = len(self.misses)
        noun = "flow" if count == 1 else "flows"
        details = "; ".join(f"{m.label} ({m.why})" for m in self.misses)
        return f"{count} {noun} for key {self.key}, none matched: {details}"


def match(group: FlowGroup, key: str, data: Mapping[str, str]) -> Matched | NoMatch:
    """The first flow of ``group`` for ``key`` whose filters all match ``data``."""
    candidates = group.flows_for(key)
    for position, flow in candidates:
        for f in flow.filters:
            if not filter_matches(f, data):
                break
        else:
            return Matched(flow, position, group.label(position))
    return NoMatch(key, tuple(_misses(group, candidates, data)))


def _misses(
    group: FlowGroup, candidates: tuple[tuple[int, Flow], ...], data: Mapping[str, str]
) -> list[Miss]:
    out: list[Miss] = []
    for position, flow in candidates:
        failing = next(f for f in flow.filters if not filter_matches(f, data))
        out.append(Miss(position, group.label(position), failing, explain(failing, data)))
    return out
