"""The dry run: which group, which flow, why the others missed, what would run."""

from __future__ import annotations

import json

import pytest

from keypress_ari.flows.model import Catalog
from keypress_ari.flows.yamlio import load_catalog_yaml
from keypress_ari.simulate import simulate

CATALOG = """
flow_groups:
  - name: press-one
    max_attempts: 2
    flows:
      - name: ca-callers
        key: "1"
        filters: [{token: caller_state, op: "==", value: CA}]
        extra_tokens: {queue: west}
        continue_routing: true
      - key: "1"
        extra_tokens: {queue: general}
        continue_routing: true
      - name: dnc
        key: "9"
        call_control_actions:
          - {block_caller: {reason: dnc}}
          - hangup
          - mute_consumer
        disposition: do_not_call
      - name: quiet
        key: "2"
        call_control_actions: [mute_consumer]
      - name: silent
        key: no_key_press
        disposition: no_response
  - name: agent
    redirect_no_key_press: false
    flows:
      - name: sale
        key: "1"
        filters: [{token: buyer, op: "==", value: globex}]
        disposition: sale
      - name: back
        key: "7"
        continue_routing: true
        buyer_conference_time_limit: 30
      - name: beep
        key: "8"
        call_control_actions: [{play: {media: "sound:beep", to: both}}]
  - name: controls
    pass_through_digits: true
    flows:
      - name: spam
        key: "#"
        filters:
          - {token: caller_type, op: "!=", value: verified}
          - {token: score, op: ">", value: 10}
        disposition: spam
routers:
  - {name: main, prompt: "sound:hello", flow_group: press-one, buyers: [acme, globex]}
  - {name: direct, request_key_press: false, buyers: [acme]}
buyers:
  - {name: acme, endpoint: Local/a@b}
  - {name: globex, endpoint: Local/g@b, forwards_to_external_agent: true, flow_group: agent}
numbers:
  - {number: "100", router: main}
  - {number: "101", router: direct, keypress_controls: true, flow_group: controls}
"""


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog_yaml(CATALOG, "test")


def test_the_prompt_uses_the_router_group_and_explains_earlier_misses(catalog: Catalog) -> None:
    r = simulate(catalog, number="100", digit="1", tokens={"caller_state": "NY"})
    assert (r.stage, r.group, r.outcome) == ("prompt", "press-one", "matched")
    assert r.matched == "press-one/key 1 #2"
    assert r.call_data["dialled_number"] == "100" and r.call_data["router"] == "main"
    assert r.call_data["caller_state"] == "NY"
    [miss] = r.misses
    assert miss.flow == "press-one/ca-callers"
    assert miss.filter == "caller_state == 'CA'"
    assert miss.why == "caller_state is 'NY', wanted == 'CA'"
    assert r.would_run is not None
    assert r.would_run.tokens == {"queue": "general"} and r.would_run.continue_routing
    text = r.render()
    assert "not matched: press-one/ca-callers" in text and "set tokens queue=general" in text


def test_actions_in_order_stop_at_hangup(catalog: Catalog) -> None:
    r = simulate(catalog, number="100", digit="9")
    assert r.would_run is not None
    assert [a["action"] for a in r.would_run.call_control_actions] == ["block_caller", "hangup"]
    assert r.would_run.call_control_actions[0]["reason"] == "dnc"
    assert [a["action"] for a in r.would_run.not_run] == ["mute_consumer"]
    assert r.would_run.disposition == "do_not_call" and r.would_run.ends_call
    assert r.would_run.webhook_actions == []


def test_actions_only_at_the_prompt_end_the_key_press_stage(catalog: Catalog) -> None:
    r = simulate(catalog, number="100", digit="2")
    assert r.would_run is not None and "key press stage ends" in r.would_run.then


def test_unmatched_key_at_the_prompt_reprompts(catalog: Catalog) -> None:
    r = simulate(catalog, number="100", digit="5")
    assert r.outcome == "no_match"
    assert "no flow for key 5" in r.reason and "prompted again (up to 2 presses)" in r.reason


def test_no_key_press(catalog: Catalog) -> None:
    r = simulate(catalog, number="100", digit="no_key_press")
    assert r.matched == "press-one/silent" and r.would_run is not None
    assert r.would_run.disposition == "no_response"


def test_caller_on_a_live_call_uses_the_number_group(catalog: Catalog) -> None:
    r = simulate(catalog, number="101", digit="#",
                 tokens={"caller_type": "unverified", "score": "abc"})
    assert (r.stage, r.group, r.outcome) == ("live", "controls", "no_match")
    [miss] = r.misses
    assert miss.filter == "score > 10"
    assert miss.why == "score is 'abc', not a number, wanted > 10"
    r2 = simulate(catalog, number="100", digit="1", stage="live")
    assert r2.outcome == "no_flows" and "no keypress_controls" in r2.group_reason


def test_buyer_leg_uses_the_buyer_group_and_sees_the_buyer(catalog: Catalog) -> None:
    r = simulate(catalog, number="100", digit="1", leg="buyer", buyer="globex")
    assert (r.group, r.matched, r.call_data["buyer"]) == ("agent", "agent/sale", "globex")
    r2 = simulate(catalog, number="100", digit="1", leg="buyer", buyer="acme")
    assert r2.outcome == "no_flows" and "does not forward" in r2.group_reason
    r3 = simulate(catalog, number="100", digit="1", leg="buyer")
    assert r3.outcome == "invalid"


def test_conference_time_limit(catalog: Catalog) -> None:
    late = simulate(catalog, number="100", digit="7", leg="buyer", buyer="globex",
                    buyer_seconds=45)
    assert late.outcome == "ignored" and late.time_limit is not None
    assert late.time_limit.ignored and "limit 30s" in late.time_limit.verdict
    assert late.would_run is None
    early = simulate(catalog, number="100", digit="7", leg="buyer", buyer="globex",
                     buyer_seconds=10)
    assert early.outcome == "matched" and early.time_limit is not None
    assert not early.time_limit.ignored and early.would_run is not None
    unknown = simulate(catalog, number="100", digit="7", leg="buyer", buyer="globex")
    assert unknown.outcome == "matched" and unknown.time_limit is not None
    assert "not checked" in unknown.time_limit.verdict


def test_play_action_keeps_its_target(catalog: Catalog) -> None:
    r = simulate(catalog, number="100", digit="8", leg="buyer", buyer="globex")
    assert r.would_run is not None
    assert r.would_run.call_control_actions == [
        {"action": "play", "media": "sound:beep", "to": "both"}]


def test_invalid_inputs(catalog: Catalog) -> None:
    assert simulate(catalog, number="999", digit="1").outcome == "invalid"
    assert simulate(catalog, number="100", digit="x").outcome == "invalid"
    assert simulate(catalog, number="100", digit="1", buyer="nobody").outcome == "invalid"


def test_result_is_json_able(catalog: Catalog) -> None:
    r = simulate(catalog, number="100", digit="1", leg="buyer", buyer="globex",
                 buyer_seconds=3.5)
    data = json.loads(json.dumps(r.to_dict()))
    assert data["matched"] == "agent/sale" and data["outcome"] == "matched"
    assert data["would_run"]["disposition"] == "sale"


def test_webhook_actions_are_listed_when_flows_have_them() -> None:
    text = """
flow_groups:
  - name: g
    flows:
      - key: "3"
        disposition: sale
        actions:
          - webhook: {url: "https://crm.example/hook?lead={{lead_id}}", method: POST}
routers: [{name: r, flow_group: g}]
numbers: [{number: "5", router: r}]
"""
    r = simulate(load_catalog_yaml(text, "t"), number="5", digit="3")
    assert r.would_run is not None and len(r.would_run.webhook_actions) == 1
    assert "crm.example" in json.dumps(r.would_run.webhook_actions)
    assert "webhook" in r.render()


MODES_CATALOG = """
flow_groups:
  - name: agent
    modes: [stasis, ami]
    flows:
      - {key: "1", name: sale, disposition: sale}
      - {key: "4", name: hold, call_control_actions: [hold_consumer]}
      - {key: "7", name: next, continue_routing: true}
  - name: agi
    modes: [fastagi]
    flows:
      - {key: "1", filters: [{token: vip, op: "==", value: "yes"}], disposition: vip}
routers: [{name: r, request_key_press: false, buyers: [acme]}]
buyers:
  - {name: acme, endpoint: "PJSIP/acme", forwards_to_external_agent: true, flow_group: agent}
numbers:
  - {number: "100", router: r, keypress_controls: true, flow_group: agi}
"""


@pytest.mark.parametrize("mode, outcome, fragment", [
    ("stasis", "matched", ""),
    ("ami", "matched", ""),
    ("fastagi", "no_flows", "flow group agent does not list fastagi in its modes"),
    ("sip", "invalid", "mode must be one of stasis, fastagi, ami"),
])
def test_a_group_listens_only_in_its_modes(mode: str, outcome: str, fragment: str) -> None:
    cat = load_catalog_yaml(MODES_CATALOG, "modes.yaml")
    res = simulate(cat, number="100", digit="1", leg="buyer", buyer="acme", mode=mode)
    assert (res.outcome, res.mode) == (outcome, mode)
    assert fragment in res.reason
    assert res.moves_to_stasis is None  # a disposition needs no Stasis app


@pytest.mark.parametrize("digit, moved", [("4", "hold_consumer"), ("7", "continue routing")])
def test_ami_says_what_moves_the_call_into_stasis(digit: str, moved: str) -> None:
    cat = load_catalog_yaml(MODES_CATALOG, "modes.yaml")
    res = simulate(cat, number="100", digit=digit, leg="buyer", buyer="acme", mode="ami")
    assert res.outcome == "matched" and res.moves_to_stasis == moved
    assert res.would_run is not None
    assert res.would_run.then.startswith("the call is moved into the Stasis app first")
    stasis = simulate(cat, number="100", digit=digit, leg="buyer", buyer="acme")
    assert stasis.moves_to_stasis is None


@pytest.mark.parametrize("mode, digit, fragment", [
    ("ami", "5", "the digit reaches the other party (AMI only watches)"),
    ("fastagi", "1", "the key is in the applicationmap: it does not reach the other party"),
    ("fastagi", "5", "the key is not in the applicationmap: it reaches the other party"),
])
def test_what_becomes_of_an_unused_digit_per_mode(mode: str, digit: str, fragment: str) -> None:
    cat = load_catalog_yaml(MODES_CATALOG, "modes.yaml")
    leg_args = {"leg": "buyer", "buyer": "acme"} if mode == "ami" else {"buyer": "acme"}
    res = simulate(cat, number="100", digit=digit, mode=mode, **leg_args)  # type: ignore[arg-type]
    assert res.outcome == "no_match", res
    assert fragment in res.reason
