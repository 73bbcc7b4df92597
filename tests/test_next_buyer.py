"""Choosing the next available buyer: a pure function over the catalog and live counts."""

from __future__ import annotations

from keypress_ari.calls.buyer_choice import BuyerLoad, Skipped, next_buyer
from keypress_ari.flows.model import Router
from keypress_ari.flows.yamlio import load_catalog_yaml

CATALOG = load_catalog_yaml("""
routers:
  - {name: r, request_key_press: false, buyers: [a, b, c, d]}
buyers:
  - {name: a, endpoint: PJSIP/a}
  - {name: b, endpoint: PJSIP/b, enabled: false}
  - {name: c, endpoint: PJSIP/c, max_concurrency: 2}
  - {name: d, endpoint: PJSIP/d}
""", "test.yaml")
ROUTER = CATALOG.router("r")
assert ROUTER is not None


def router() -> Router:
    assert ROUTER is not None
    return ROUTER


def test_first_buyer_in_priority_order() -> None:
    buyer, skipped = next_buyer(router(), CATALOG, tried=[], live={})
    assert buyer is not None and buyer.name == "a" and skipped == []


def test_tried_disabled_and_full_buyers_are_skipped_with_reasons() -> None:
    buyer, skipped = next_buyer(router(), CATALOG, tried=["a"], live={"c": 2})
    assert buyer is not None and buyer.name == "d"
    assert skipped == [Skipped("b", "disabled"), Skipped("c", "at max_concurrency 2")]


def test_below_max_concurrency_is_available() -> None:
    buyer, _ = next_buyer(router(), CATALOG, tried=["a"], live={"c": 1})
    assert buyer is not None and buyer.name == "c"


def test_nobody_left() -> None:
    buyer, skipped = next_buyer(router(), CATALOG, tried=["a", "c", "d"], live={})
    assert buyer is None and skipped == [Skipped("b", "disabled")]


def test_a_buyer_missing_from_the_catalog_is_skipped() -> None:
    other = load_catalog_yaml("""
routers:
  - {name: r, request_key_press: false, buyers: [a]}
buyers:
  - {name: a, endpoint: PJSIP/a}
""", "t.yaml")
    router = other.router("r")
    assert router is not None
    empty = load_catalog_yaml("buyers: [{name: z, endpoint: PJSIP/z}]", "e.yaml")
    buyer, skipped = next_buyer(router, empty, tried=[], live={})
    assert buyer is None and skipped == [Skipped("a", "not in the catalog")]


def test_a_buyer_refused_elsewhere_is_passed_over_like_a_tried_one() -> None:
    # the dial path adds the buyers another daemon holds at their limit to ``tried``
    buyer, skipped = next_buyer(router(), CATALOG, tried=["a", "c"], live={})
    assert buyer is not None and buyer.name == "d" and skipped == [Skipped("b", "disabled")]


def test_buyer_load_counts_live_legs() -> None:
    load = BuyerLoad()
    load.acquire("c", "leg-1")
    load.acquire("c", "leg-2")
    load.acquire("c", "leg-2")  # the same leg again (a resync): counted once
    assert load.release("leg-1") == "c"
    assert dict(load.live) == {"c": 1} and dict(load.legs) == {"leg-2": "c"}
    assert load.release("leg-2") == "c"
    assert load.release("leg-2") is None  # never below zero
    assert dict(load.live) == {}
