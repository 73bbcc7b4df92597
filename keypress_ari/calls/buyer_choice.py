"""Which buyer a call goes to next: a pure choice over the catalog and live counts.

"Next available" walks the router's buyers in priority order and skips the buyers already
tried on this call, disabled ones, unknown ones (the catalog changed) and those at their
``max_concurrency``, counted across the daemon's live calls by :class:`BuyerLoad`.
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
    """Live legs per buyer across all calls of this daemon (the one shared count)."""

    __slots__ = ("_live",)

    def __init__(self) -> None:
        self._live: dict[str, int] = {}

    @property
    def live(self) -> Mapping[str, int]:
        return self._live

    def acquire(self, buyer: str) -> None:
        self._live[buyer] = self._live.get(buyer, 0) + 1

    def release(self, buyer: str) -> None:
        left = self._live.get(buyer, 0) - 1
        if left > 0:
            self._live[buyer] = left
        else:
            self._live.pop(buyer, None)
