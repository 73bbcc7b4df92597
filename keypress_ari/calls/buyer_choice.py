"""Which buyer a call goes to next: a pure choice over the catalog and live counts.

"Next available" walks the router's buyers in priority order and skips the buyers already
tried on this call, disabled ones, unknown ones (the catalog changed) and those at their
``max_concurrency``. The counts it is given are this daemon's live legs (:class:`BuyerLoad`);
the buyer it picks is then reserved across every daemon sharing the database
(``calls/buyer_limits.py``), and a refused reservation walks on to the next buyer.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from keypress_ari.flows.model import Buyer, Catalog, Router


@dataclass(frozen=True, slots=True)
class Skipped:
    buyer: str
    why: str


def next_buyer(
    router: Router,
    catalog: Catalog,
    tried: Collection[str],
    live: Mapping[str, int],
) -> tuple[Buyer | None, list[Skipped]]:
    """The first available buyer of ``router`` and why the ones before it were skipped."""
    skipped: list[Skipped] = []
    for name in router.buyers:
        if name in tried:
            continue  # already tried on this call: not worth a log line each time
        buyer = catalog.buyer(name)
        if buyer is None:
            skipped.append(Skipped(name, "not in the catalog"))
        elif not buyer.enabled:
            skipped.append(Skipped(name, "disabled"))
        elif buyer.max_concurrency is not None and live.get(name, 0) >= buyer.max_concurrency:
            skipped.append(Skipped(name, f"at max_concurrency {buyer.max_concurrency}"))
        else:
            return buyer, skipped
    return None, skipped


class BuyerLoad:
    """Live legs per buyer across all calls of this daemon: leg (channel id) → buyer."""

    __slots__ = ("_legs", "_live")

    def __init__(self) -> None:
        self._live: dict[str, int] = {}
        self._legs: dict[str, str] = {}

    @property
    def live(self) -> Mapping[str, int]:
        return self._live

    @property
    def legs(self) -> Mapping[str, str]:
        return self._legs

    def acquire(self, buyer: str, leg: str) -> None:
        if leg in self._legs:
            return  # already counted (a resync that saw it again)
        self._legs[leg] = buyer
        self._live[buyer] = self._live.get(buyer, 0) + 1

    def release(self, leg: str) -> str | None:
        """Forget the leg; its buyer, or None when it was not held."""
        buyer = self._legs.pop(leg, None)
        if buyer is None:
            return None
        left = self._live.get(buyer, 0) - 1
        if left > 0:
            self._live[buyer] = left
        else:
            self._live.pop(buyer, None)
        return buyer
