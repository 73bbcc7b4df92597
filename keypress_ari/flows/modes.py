"""Which flow features each call mode can carry out, as data and one pure check.

A flow group says in ``modes`` how the calls it serves reach the daemon: ``stasis`` (the
dialplan hands the call to the Stasis app: everything works), ``fastagi`` (the dialplan's
``Dial()`` bridges the call; a ``features.conf`` applicationmap entry runs our FastAGI server
on the channel that pressed). The README's mode matrix says the same per feature. A feature a
mode cannot do is refused when the catalog is validated (import, API, console), naming the
flow, never discovered on a live call.

FastAGI runs on the pressing channel only, while that channel is out of the bridge: it can
read both legs' variables, hang up either leg (``HANGUP NAME``), set variables and play to
the presser, and nothing else on the other leg.

The ``ami`` mode changes nothing in the dialplan: it watches ``DTMFEnd`` on every call that
``Dial()`` bridged and acts with AMI actions (Hangup, MuteAudio, Setvar) on either leg. It
cannot keep a digit from the other party (AMI only watches). What AMI cannot do (hold,
play, continue routing) it does by moving the call into the Stasis app
(``calls.handover``), after which the Stasis mode carries it: such a group must list
``stasis`` in its modes too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

from keypress_ari.flows.errors import CatalogProblem, Loc, format_loc
from keypress_ari.flows.syntax import NO_KEY_PRESS

Mode = Literal["stasis", "fastagi", "ami"]
MODES: tuple[Mode, ...] = ("stasis", "fastagi", "ami")
Leg = Literal["caller", "buyer"]


_MOVES = ("moves the call into the Stasis app, which then carries it: list stasis in the "
          "group's modes too")


def _ami_problems(key: str, continue_routing: bool, controls: list[tuple[str, str | None]],
                  with_stasis: bool) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if key == NO_KEY_PRESS:
        yield ("key",), ("no_key_press runs when a router prompt times out, and only the "
                         "stasis mode plays prompts")
    if with_stasis:
        return
    if continue_routing:
        yield ("continue_routing",), f"continue routing in the ami mode {_MOVES}"
    for i, (kind, _) in enumerate(controls):
        if kind in ("hold_consumer", "unhold_consumer", "play"):
            yield ("call_control_actions", i), f"{kind} in the ami mode {_MOVES}"


def flow_problems(key: str, continue_routing: bool, controls: list[tuple[str, str | None]],
                  mode: Mode, leg: Leg | None, *, with_stasis: bool = False
                  ) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Why a flow cannot run in ``mode`` on ``leg`` (None: the leg is not known yet):
    ``(location under the flow, message)`` pairs. ``controls`` holds each call control
    action's kind and, for ``play``, its target; ``with_stasis``: the group lists the stasis
    mode too (the ami mode may then move a call there)."""
    if mode == "stasis":
        return
    if mode == "ami":
        yield from _ami_problems(key, continue_routing, controls, with_stasis)
        return
    if key == NO_KEY_PRESS:
        yield ("key",), ("no_key_press runs when a router prompt times out, and only the "
                         "stasis mode plays prompts")
    if continue_routing:
        yield ("continue_routing",), ("continue routing dials the next buyer from the Stasis "
                                      "app: not possible in fastagi mode")
    for i, (kind, target) in enumerate(controls):
        where = ("call_control_actions", i)
        if kind in ("hold_consumer", "unhold_consumer"):
            yield where, f"{kind} needs the stasis mode (fastagi acts on the pressing channel)"
        elif kind in ("mute_consumer", "unmute_consumer") and leg == "buyer":
            yield where, (f"{kind} on a buyer's group: in fastagi mode only the pressing "
                          "channel can be muted, and the buyer presses")
        elif kind == "play" and (target == "both" or (leg, target) in (
                ("caller", "buyer"), ("buyer", "consumer"))):
            yield where, (f"play to {target}: in fastagi mode audio can only be played "
                          f"to the pressing channel (the {leg or 'pressing'} leg)")


Problem = Callable[[Loc, str], CatalogProblem]


def check_group_modes(group: Any, leg: Leg | None, problem: Problem) -> None:
    """Raise ``problem`` for the first flow of ``group`` (a ``FlowGroup``) that one of its
    modes cannot carry out on ``leg``."""
    for mode in group.modes:
        for pos, flow in enumerate(group.flows):
            controls = [(a.kind, a.to if a.kind == "play" else None)
                        for a in flow.call_control_actions]
            for where, message in flow_problems(flow.key, flow.continue_routing, controls,
                                                mode, leg,
                                                with_stasis="stasis" in group.modes):
                raise problem(("flows", pos, *where), f"mode {mode}: {message}")


def check_assignments(catalog: Any, groups: Mapping[str, Any]) -> None:
    """A group's modes against where the ``catalog`` (a ``Catalog``) assigns it: a router's
    prompt runs in Stasis; a buyer's agent presses on the buyer leg, a number's key press
    controls on the caller leg."""
    for i, r in enumerate(catalog.routers):
        group = groups.get(r.flow_group) if r.flow_group else None
        if group is not None and "stasis" not in group.modes:
            loc: Loc = ("routers", i, "flow_group")
            raise CatalogProblem(loc, format_loc(loc, catalog), (
                f"flow group {group.name!r} has no stasis mode, and a router's prompt runs "
                "in the Stasis app"))
    uses: list[tuple[Loc, str | None, Leg]] = [
        *((("buyers", i, "flow_group"), b.flow_group, "buyer")
          for i, b in enumerate(catalog.buyers)),
        *((("numbers", i, "flow_group"), n.flow_group, "caller")
          for i, n in enumerate(catalog.numbers))]
    for use, name, leg in uses:
        group = groups.get(name) if name else None
        if group is None or group.modes == ("stasis",):
            continue
        index = catalog.flow_groups.index(group)

        def problem(loc: Loc, message: str, _use: Loc = use, _i: int = index) -> CatalogProblem:
            full: Loc = ("flow_groups", _i, *loc)
            return CatalogProblem(full, format_loc(full, catalog),
                                  f"{message} (assigned at {format_loc(_use, catalog)})")
        check_group_modes(group, leg, problem)
