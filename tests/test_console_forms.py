"""The console's per-field forms, pure: a stored object round-trips through its form; blank
rows are dropped; a validation message lands on the form field it names, even when blank
or removed rows shifted the data's indexes."""

from __future__ import annotations

import pytest

from keypress_ari.console import forms
from keypress_ari.flows.errors import CatalogError
from keypress_ari.flows.model import Catalog
from keypress_ari.flows.yamlio import catalog_from_data, load_catalog_yaml

CATALOG = """
flow_groups:
  - name: sales
    max_attempts: 4
    modes: [stasis]
    flows:
      - key: "1"
        name: ca-sale
        filters: [{token: caller_state, op: in, value: [CA, NV]},
                  {token: score, op: ">=", value: 7}, {token: vip, op: exists}]
        extra_tokens: {tagged: "yes", lead: "{{caller_number}}"}
        disposition: sale
        call_control_actions: [mute_consumer, {play: {media: "sound:beep", to: both}},
                               {block_caller: {reason: spam}}]
        buyer_conference_time_limit: 90
        actions:
          - webhook: {url: "https://crm.example/hook?lead={{lead}}", method: PUT,
                      headers: {X-Api-Key: abc}, body: {key: "{{digit}}", n: [1, 2]}}
      - {key: "1", continue_routing: true}
      - {key: no_key_press, disposition: no_answer}
routers:
  - {name: main, prompt: "sound:press-1", press_1_timeout: 7.5, flow_group: sales,
     buyers: [a, b]}
buyers:
  - {name: a, endpoint: "PJSIP/a", max_concurrency: 2}
  - {name: b, endpoint: "PJSIP/b", forwards_to_external_agent: true, flow_group: sales}
numbers:
  - {number: "18005550100", router: main, keypress_controls: true, flow_group: sales}
"""


def _catalog() -> Catalog:
    return load_catalog_yaml(CATALOG, "test")


def test_a_flow_group_round_trips_through_its_form() -> None:
    group = _catalog().flow_groups[0]
    fields = forms.group_fields(group)
    assert fields["flows[0].filters[0].value"] == "CA, NV"
    assert fields["flows[0].filters_count"] == "4"  # three filters and a blank row
    assert fields["flow_count"] == "4" and fields["flows[3].filters_count"] == "1"
    data, _ = forms.parse_group(fields, "sales")
    again = catalog_from_data({"flow_groups": [data]}, "form", partial=True).flow_groups[0]
    assert again == group


@pytest.mark.parametrize("kind", ["routers", "buyers", "numbers"])
def test_routers_buyers_numbers_round_trip_through_their_forms(kind: str) -> None:
    catalog = _catalog()
    for item in getattr(catalog, kind):
        key = "number" if kind == "numbers" else "name"
        data, _ = forms.parse_simple(kind, forms.simple_fields(kind, item),
                                     getattr(item, key))
        again = getattr(catalog_from_data({kind: [data]}, "form", partial=True), kind)[0]
        assert again == item


def _problems(fields: dict[str, str]) -> dict[str, str]:
    data, rows = forms.parse_group(fields, "sales")
    with pytest.raises(CatalogError) as caught:
        catalog_from_data({"flow_groups": [data]}, "console", partial=True)
    return forms.form_errors(str(caught.value), "flow_groups[0]", rows)


def test_an_error_names_the_form_field_even_after_blank_and_removed_rows() -> None:
    fields = forms.group_fields(_catalog().flow_groups[0])
    fields["flows[0].remove"] = "on"  # data flow 0 is now form flow 1
    fields["flows[1].filters_count"] = "3"  # form filter 0 and 1 blank, 2 is bad
    fields["flows[1].filters[2].token"] = "score"
    fields["flows[1].filters[2].op"] = ">"
    fields["flows[1].filters[2].value"] = "lots"
    errors = _problems(fields)
    assert list(errors) == ["flows[1].filters[2]"], errors
    assert "needs a numeric value" in errors["flows[1].filters[2]"]


def test_continue_routing_with_a_disposition_is_refused_on_the_flow() -> None:
    fields = forms.group_fields(_catalog().flow_groups[0])
    fields["flows[1].disposition"] = "sale"
    errors = _problems(fields)
    assert errors == {"flows[1]": "continue_routing and disposition are mutually exclusive"}


def test_a_bad_field_value_lands_on_that_field() -> None:
    fields = forms.group_fields(_catalog().flow_groups[0])
    fields["flows[2].disposition"] = "no answer!"
    fields["max_attempts"] = "99"
    errors = _problems(fields)
    assert set(errors) == {"flows[2].disposition", "max_attempts"}, errors
    assert "less than or equal to 20" in errors["max_attempts"]


def test_a_webhook_body_that_is_not_json_is_a_field_problem() -> None:
    fields = forms.group_fields(_catalog().flow_groups[0])
    fields["flows[0].actions[0].webhook.body"] = "{key: 1"
    with pytest.raises(forms.FieldProblem) as caught:
        forms.parse_group(fields, "sales")
    assert caught.value.path == "flows[0].actions[0].webhook.body"
    assert "not JSON" in caught.value.message
    fields["flows[0].actions[0].webhook.body"] = ""
    fields["flows[0].actions[0].webhook.headers"] = "X-Api-Key abc"
    with pytest.raises(forms.FieldProblem, match="line 1: write it as Name: value"):
        forms.parse_group(fields, "sales")


def test_row_counts_are_bounded() -> None:
    fields = {"flow_count": "100000", "max_attempts": "3", "modes.stasis": "on"}
    for i in range(forms.MAX_FLOWS + 5):
        fields[f"flows[{i}].key"] = "1"
        fields[f"flows[{i}].disposition"] = "x"
    data, _ = forms.parse_group(fields, "g")
    assert len(data["flows"]) == forms.MAX_FLOWS


def test_a_message_about_another_object_is_kept_at_the_top() -> None:
    errors = forms.form_errors("console: routers[3] (x).flow_group: unknown flow group 'q'",
                               "flow_groups[0]", forms.RowMap())
    assert errors == {"": "routers[3].flow_group: unknown flow group 'q'"}
