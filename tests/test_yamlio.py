"""Catalog YAML loading, validation errors and dumping (pure)."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pytest
from pydantic import ValidationError

from keypress_ari.flows.errors import CatalogError
from keypress_ari.flows.match import Matched, match
from keypress_ari.flows.model import CallControlAction, Catalog, Flow, FlowAction, Webhook
from keypress_ari.flows.yamlio import dump_catalog_yaml, load_catalog_yaml

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flows.yaml"

MINIMAL = """\
flow_groups:
  - name: g
    flows:
      - key: 2
        disposition: not_interested
routers:
  - name: main
    flow_group: g
numbers:
  - number: 18005550100
    router: main
"""


def load(text: str) -> Catalog:
    return load_catalog_yaml(dedent(text), "flows.yaml")


def error(text: str) -> CatalogError:
    with pytest.raises(CatalogError) as info:
        load(text)
    return info.value


def example() -> Catalog:
    return load_catalog_yaml(EXAMPLE.read_text(), "flows.yaml")


def test_example_loads_and_routes_press_2_to_not_interested() -> None:
    catalog = example()
    number = catalog.number("18005550100")
    assert number is not None
    router = catalog.router(number.router)
    assert router is not None and router.name == "main" and router.flow_group == "press-one"
    group = catalog.flow_group("press-one")
    assert group is not None
    result = match(group, "2", {})
    assert isinstance(result, Matched) and result.flow.disposition == "not_interested"


def test_example_round_trip_is_lossless() -> None:
    catalog = example()
    dumped = dump_catalog_yaml(catalog)
    again = load_catalog_yaml(dumped, "dump.yaml")
    assert again == catalog
    assert dump_catalog_yaml(again) == dumped


def test_example_uses_every_field_and_operator() -> None:
    catalog = example()
    dumped = dump_catalog_yaml(catalog)
    kinds = (Flow, CallControlAction, FlowAction, Webhook)
    for model in kinds:
        for name in model.model_fields:
            if name != "kind":
                assert f"{name}:" in dumped, name
    for kind in CallControlAction.model_fields["kind"].annotation.__args__:  # type: ignore[union-attr]
        assert kind in dumped, kind
    ops = {f.op for g in catalog.flow_groups for fl in g.flows for f in fl.filters}
    assert len(ops) == 13
    for part in (catalog.flow_groups, catalog.routers, catalog.buyers, catalog.numbers):
        for name in type(part[0]).model_fields:
            assert any(name in item.model_fields_set for item in part), name


def test_dump_omits_defaults_and_quotes_keys() -> None:
    dumped = dump_catalog_yaml(load(MINIMAL))
    assert dumped == dedent(
        """\
        flow_groups:
        - name: g
          flows:
          - key: "2"
            disposition: not_interested
        routers:
        - name: main
          flow_group: g
        numbers:
        - number: "18005550100"
          router: main
        """
    )


def test_empty_documents() -> None:
    assert load("") == Catalog.empty()
    assert load("{}") == Catalog.empty()
    assert dump_catalog_yaml(Catalog.empty()) == "{}\n"
    assert load(dump_catalog_yaml(Catalog.empty())) == Catalog.empty()


def test_actions_yaml_forms() -> None:
    catalog = load(
        """\
        flow_groups:
          - name: g
            flows:
              - key: "*"
                call_control_actions:
                  - mute_consumer
                  - {play: {media: "sound:beep", to: buyer}}
                  - {block_caller: {reason: spam}}
                  - {hangup: null}
        """
    )
    actions = catalog.flow_groups[0].flows[0].call_control_actions
    assert actions == (
        CallControlAction(kind="mute_consumer"),
        CallControlAction(kind="play", media="sound:beep", to="buyer"),
        CallControlAction(kind="block_caller", reason="spam"),
        CallControlAction(kind="hangup"),
    )
    assert [a.model_dump() for a in actions] == [
        "mute_consumer",
        {"play": {"media": "sound:beep", "to": "buyer"}},
        {"block_caller": {"reason": "spam"}},
        "hangup",
    ]


@pytest.mark.parametrize(
    ("action", "fragment"),
    [
        ("play", "play needs media"),
        ("{mute_consumer: {media: 'sound:beep'}}", "takes no media/to"),
        ("{hangup: {reason: x}}", "takes no reason"),
        ("{play: {media: 'sound:beep'}, hangup: null}", "exactly one key"),
        ("explode", "unknown action 'explode': one of mute_consumer,"),
        ("{play: {media: beep}}", "invalid media"),
    ],
)
def test_bad_actions(action: str, fragment: str) -> None:
    err = error(
        f"""\
        flow_groups:
          - name: g
            flows:
              - key: "1"
                call_control_actions: [{action}]
        """
    )
    assert err.path.startswith("flow_groups[0] (g).flows[0].call_control_actions[0]")
    assert fragment in err.message


def test_malformed_yaml_names_line_and_column() -> None:
    err = error("flow_groups:\n  - name: g\n    flows: [\n")
    assert str(err).startswith("flows.yaml: line 4 column 1: malformed YAML: ")


def test_duplicate_mapping_key_is_malformed() -> None:
    err = error("flow_groups:\n  - name: g\n    name: h\n    flows: []\n")
    assert str(err) == "flows.yaml: line 3 column 5: malformed YAML: duplicate key 'name'"


def test_top_level_must_be_a_mapping() -> None:
    assert "must be a mapping" in str(error("- a\n- b\n"))


def test_unknown_top_level_key() -> None:
    assert str(error("routes: []\n")) == "flows.yaml: routes: unknown field"


def test_unknown_nested_field_names_object() -> None:
    err = error(
        """\
        flow_groups: [{name: g, flows: [{key: 1, disposition: x}]}]
        routers:
          - name: main
            flow_group: g
            bogus: 1
        """
    )
    assert str(err) == "flows.yaml: routers[0] (main).bogus: unknown field"


def test_continue_routing_with_disposition_is_rejected_with_path() -> None:
    err = error(
        """\
        flow_groups:
          - name: press-one
            flows:
              - {key: 2, disposition: not_interested}
              - key: 1
                continue_routing: true
                disposition: sale
        """
    )
    assert str(err) == (
        "flows.yaml: flow_groups[0] (press-one).flows[1]: "
        "continue_routing and disposition are mutually exclusive"
    )


def test_continue_routing_with_actions_is_rejected() -> None:
    with pytest.raises(ValidationError, match="mutually exclusive"):
        Flow(
            key="1", continue_routing=True, call_control_actions=(CallControlAction(kind="hangup"),)
        )


def test_flow_must_do_something() -> None:
    err = error("flow_groups: [{name: g, flows: [{key: 1, name: idle}]}]\n")
    assert err.path == "flow_groups[0] (g).flows[0] (idle)"
    assert "a flow must set" in err.message


def test_bad_regex_is_rejected_with_path() -> None:
    err = error(
        """\
        flow_groups:
          - name: g
            flows:
              - key: 1
                filters: [{token: cid, op: "=~", value: "(900"}]
                disposition: spam
        """
    )
    assert err.path == "flow_groups[0] (g).flows[0].filters[0]"
    assert err.message.startswith("invalid regular expression '(900'")


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        (
            "routers: [{name: main, flow_group: nope}]",
            "routers[0] (main).flow_group",
            "unknown flow group 'nope'",
        ),
        (
            "routers: [{name: r, flow_group: g, buyers: [ghost]}]",
            "routers[0] (r).buyers[0]",
            "unknown buyer 'ghost'",
        ),
        (
            "numbers: [{number: '5551000', router: nowhere}]",
            "numbers[0] (5551000).router",
            "unknown router 'nowhere'",
        ),
        (
            "buyers: [{name: b, endpoint: PJSIP/b, flow_group: x}]",
            "buyers[0] (b).flow_group",
            "unknown flow group 'x'",
        ),
        (
            "flow_groups: [{name: g, flows: []}, {name: g, flows: []}]",
            "flow_groups[1] (g).name",
            "duplicate 'g' (also flow_groups[0])",
        ),
    ],
)
def test_dangling_references_and_duplicates(extra: str, path: str, message: str) -> None:
    base = "flow_groups: [{name: g, flows: [{key: 1, disposition: x}]}]\n"
    text = extra + "\n" if extra.startswith("flow_groups") else base + extra + "\n"
    err = error(text)
    assert (err.path, err.message) == (path, message)
    assert str(err) == f"flows.yaml: {path}: {message}"


def test_partial_catalog_skips_reference_checks() -> None:
    text = "numbers: [{number: '5551000', router: elsewhere}]\n"
    catalog = load_catalog_yaml(text, "part.yaml", partial=True)
    assert catalog.numbers[0].router == "elsewhere"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("routers: [{name: r}]", "request_key_press needs a flow_group"),
        (
            "buyers: [{name: b, endpoint: PJSIP/b, forwards_to_external_agent: true}]",
            "needs a flow_group",
        ),
        ("numbers: [{number: '1', router: r, keypress_controls: true}]", "needs a flow_group"),
        ("routers: [{name: r, request_key_press: false, press_1_timeout: 0}]", "greater than 0"),
        ("routers: [{name: 'bad name', request_key_press: false}]", "invalid name"),
        ("numbers: [{number: '1-800', router: r}]", "invalid number"),
        ("flow_groups: [{name: g, max_attempts: 21, flows: []}]", "less than or equal to 20"),
        ("flow_groups: [{name: g, flows: [{key: 10, disposition: x}]}]", "key must be"),
        (
            "flow_groups: [{name: g, flows: [{key: 1, disposition: Not-Snake}]}]",
            "invalid disposition",
        ),
        (
            "flow_groups: [{name: g, flows: [{key: 1, extra_tokens: {sale: yes}}]}]",
            "quote the value",
        ),
    ],
)
def test_field_validation(text: str, fragment: str) -> None:
    assert fragment in str(error(text + "\n"))


def test_multiple_problems_are_all_reported() -> None:
    err = error("routers: [{name: a, bogus: 1}, {name: b, other: 2, request_key_press: false}]\n")
    lines = str(err).splitlines()
    assert "flows.yaml: routers[0] (a).bogus: unknown field" in lines
    assert "flows.yaml: routers[1] (b).other: unknown field" in lines


def test_catalog_lookups_and_tokens() -> None:
    catalog = example()
    assert catalog.number("nope") is None
    buyer = catalog.buyer("globex")
    assert buyer is not None and buyer.max_concurrency == 5 and buyer.forwards_to_external_agent
    assert catalog.router("direct") is not None and catalog.flow_group("x") is None
    assert {"caller_state", "caller_id", "lead_score", "opted_out"} <= catalog.referenced_tokens()


def test_webhook_actions_load_and_round_trip() -> None:
    catalog = load(
        """\
        flow_groups:
          - name: g
            flows:
              - key: 3
                actions:
                  - webhook:
                      url: "https://crm.example/hook"
                      method: POST
                      headers: {X-Api-Key: abc}
                      body: {caller: "{{caller_number}}", key: "{{digit}}"}
        """
    )
    flow = catalog.flow_groups[0].flows[0]
    assert flow.actions == (
        FlowAction(
            webhook=Webhook(
                url="https://crm.example/hook",
                headers={"X-Api-Key": "abc"},
                body={"caller": "{{caller_number}}", "key": "{{digit}}"},
            )
        ),
    )
    dumped = dump_catalog_yaml(catalog)
    assert "method:" not in dumped  # POST is the default
    assert load_catalog_yaml(dumped, "dump.yaml") == catalog


def test_bad_webhook_is_reported_with_its_path() -> None:
    err = error(
        """\
        flow_groups:
          - name: g
            flows:
              - key: 1
                actions: [{webhook: {url: "ftp://x/y"}}]
        """
    )
    assert err.path.startswith("flow_groups[0] (g).flows[0].actions[0].webhook.url")
    assert "http(s) URL" in err.message
