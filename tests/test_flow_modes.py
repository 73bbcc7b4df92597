"""Flow groups' call modes: what the fastagi mode cannot do is refused when the catalog is
validated, naming the flow and, for leg-dependent limits, where the group is assigned; the
features applicationmap is made from the groups that list fastagi."""

from __future__ import annotations

import pytest

from keypress_ari.features import feature_keys, feature_name, render
from keypress_ari.flows.errors import CatalogError
from keypress_ari.flows.yamlio import dump_catalog_yaml, load_catalog_yaml

BASE = """
routers: [{name: r, request_key_press: false, buyers: [b]}]
buyers:
  - {name: b, endpoint: "PJSIP/b", forwards_to_external_agent: true, flow_group: %(buyer)s}
numbers:
  - {number: "18005550100", router: r, keypress_controls: true, flow_group: %(number)s}
flow_groups:
"""


def catalog(groups: str, buyer: str = "g", number: str = "g") -> str:
    return BASE % {"buyer": buyer, "number": number} + groups


def error(text: str) -> str:
    with pytest.raises(CatalogError) as exc:
        load_catalog_yaml(text, "f.yaml")
    return str(exc.value)


@pytest.mark.parametrize("flow, fragment", [
    ('{key: "1", continue_routing: true}', "flows[0].continue_routing: mode fastagi: continue"),
    ('{key: "1", call_control_actions: [hold_consumer]}',
     "call_control_actions[0]: mode fastagi: hold_consumer needs the stasis mode"),
    ('{key: no_key_press, disposition: x}', "flows[0].key: mode fastagi: no_key_press"),
    ('{key: "1", call_control_actions: [{play: {media: "sound:beep", to: both}}]}',
     "play to both"),
])
def test_what_fastagi_cannot_do_is_refused_in_the_group(flow: str, fragment: str) -> None:
    text = catalog(f"  - {{name: g, modes: [fastagi], flows: [{flow}]}}\n", "null", "null")
    assert fragment in error(text)


@pytest.mark.parametrize("flow, fragment", [
    ('{key: "1", continue_routing: true}',
     "flows[0].continue_routing: mode ami: continue routing in the ami mode moves the call "
     "into the Stasis app"),
    ('{key: "1", call_control_actions: [mute_consumer, hold_consumer]}',
     "call_control_actions[1]: mode ami: hold_consumer in the ami mode moves the call"),
    ('{key: "1", call_control_actions: [{play: {media: "sound:beep", to: buyer}}]}',
     "play in the ami mode moves the call"),
    ('{key: no_key_press, disposition: x}', "flows[0].key: mode ami: no_key_press"),
])
def test_what_ami_does_through_stasis_needs_stasis_listed(flow: str, fragment: str) -> None:
    message = error(catalog(f"  - {{name: g, modes: [ami], flows: [{flow}]}}\n"))
    assert fragment in message
    if "no_key_press" not in flow:
        assert "list stasis in the group's modes too" in message
        load_catalog_yaml(catalog(f"  - {{name: g, modes: [ami, stasis], flows: [{flow}]}}\n"),
                          "f.yaml")


def test_leg_limits_name_the_assignment() -> None:
    groups = ('  - {name: g, modes: [stasis, fastagi], '
              'flows: [{key: "2", call_control_actions: [mute_consumer]}]}\n'
              '  - {name: h, flows: [{key: "1", disposition: x}]}\n')
    # on a number (the consumer presses: their own channel) mute is fine
    load_catalog_yaml(catalog(groups, buyer="h", number="g"), "f.yaml")
    message = error(catalog(groups, buyer="g", number="h"))
    assert "flow_groups[0] (g).flows[0].call_control_actions[0]" in message
    assert "mute_consumer on a buyer's group" in message
    assert "assigned at buyers[0] (b).flow_group" in message


def test_play_to_the_pressing_leg_only() -> None:
    groups = ('  - {name: g, modes: [fastagi], flows: [{key: "3", call_control_actions: '
              '[{play: {media: "sound:beep", to: buyer}}]}]}\n'
              '  - {name: h, flows: [{key: "1", disposition: x}]}\n')
    load_catalog_yaml(catalog(groups, buyer="g", number="h"), "f.yaml")
    assert "play to buyer" in error(catalog(groups, buyer="h", number="g"))


def test_a_router_group_needs_stasis() -> None:
    text = ('flow_groups: [{name: g, modes: [fastagi], flows: [{key: "1", disposition: x}]}]\n'
            'routers: [{name: r, flow_group: g}]\n')
    assert "routers[0] (r).flow_group: flow group 'g' has no stasis mode" in error(text)


@pytest.mark.parametrize("modes, fragment", [
    ("[]", "at least one"), ("[stasis, stasis]", "each mode once"), ("[sip]", "modes"),
])
def test_bad_modes(modes: str, fragment: str) -> None:
    text = f'flow_groups: [{{name: g, modes: {modes}, flows: [{{key: "1", disposition: x}}]}}]\n'
    assert fragment in error(text)


def test_modes_default_to_stasis_and_round_trip() -> None:
    text = ('flow_groups:\n  - {name: g, flows: [{key: "1", disposition: x}]}\n'
            '  - {name: h, modes: [stasis, fastagi], flows: [{key: "1", disposition: x}]}\n')
    loaded = load_catalog_yaml(text, "f.yaml")
    assert [g.modes for g in loaded.flow_groups] == [("stasis",), ("stasis", "fastagi")]
    dumped = dump_catalog_yaml(loaded)
    assert dumped.count("modes:") == 1 and load_catalog_yaml(dumped, "d") == loaded


FEATURES = catalog(
    '  - {name: agent, modes: [fastagi], flows: [{key: "1", disposition: sale},'
    ' {key: "*", disposition: bye}]}\n'
    '  - {name: ctl, modes: [stasis, fastagi], flows: [{key: "#", disposition: spam}]}\n'
    '  - {name: only-stasis, flows: [{key: "5", disposition: z}]}\n',
    buyer="agent", number="ctl")


def test_feature_keys_by_leg() -> None:
    keys = feature_keys(load_catalog_yaml(FEATURES, "f.yaml"))
    assert keys.caller == ("#",) and keys.buyer == ("1", "*")
    assert feature_name("#") == "kphash" and feature_name("1", "buyer") == "kpb1"


def test_rendered_features_and_dialplan() -> None:
    out = render(load_catalog_yaml(FEATURES, "f.yaml"), host="127.0.0.1", port=4599,
                 moh_class="default")
    assert ("kphash => #,self,AGI(agi://127.0.0.1:4599/keypress?digit=%23&leg=caller),default"
            in out)
    assert "kpb1 => 1,self,AGI(agi://127.0.0.1:4599/keypress?digit=1&leg=buyer),default" in out
    assert "kpbstar => *," in out and "kp5" not in out  # stasis-only groups are left out
    assert "Set(DYNAMIC_FEATURES=kphash)" in out
    assert "exten => s,1,Set(DYNAMIC_FEATURES=kpb1#kpbstar)" in out
    assert "b(keypress-buyer-features^s^1)U(keypress-answered)" in out
    assert "Set(__KEYPRESS_NUMBER=${EXTEN})" in out


def test_nothing_to_render_says_so() -> None:
    out = render(load_catalog_yaml('flow_groups: [{name: g, flows: [{key: "1", '
                                   'disposition: x}]}]\n', "f.yaml"))
    assert "nothing to add" in out


def test_any_leg_features_name_no_leg() -> None:
    out = render(load_catalog_yaml(FEATURES, "f.yaml"), any_leg=True)
    assert "kpa1 => 1,self,AGI(agi://127.0.0.1:4573/keypress?digit=1)\n" in out
    assert "leg=" not in out and "Set(__DYNAMIC_FEATURES=kpa1#kpahash#kpastar)" in out
