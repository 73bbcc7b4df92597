"""The console's per-field catalog forms, as plain functions over plain data.

A form field is named by its place in the object, the same path ``flows import`` puts in its
messages (``flows[1].filters[0].value``), so a validation message lands next to the field
it names. ``*_fields`` turn a stored object into ``{path: text}``; ``parse_*`` turn a posted
form back into the data ``flows import`` validates, dropping blank rows and remembering which
form row each kept item came from (``RowMap``) so that error paths point at the right field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from keypress_ari.flows.actions import ACTION_KINDS
from keypress_ari.flows.model import Buyer, FlowGroup, Number, Router
from keypress_ari.flows.modes import MODES
from keypress_ari.flows.syntax import KEYS

FILTER_OPS = ("==", "!=", "=~", "!~", ">", "<", ">=", "<=", "contains", "in", "not_in",
              "exists", "not_exists")
LIST_OPS = ("in", "not_in")
BARE_OPS = ("exists", "not_exists")
ORDERING = (">", "<", ">=", "<=")
PLAY_TARGETS = ("consumer", "buyer", "both")
HTTP_METHODS = ("POST", "GET", "PUT", "PATCH", "DELETE")
FLOW_ROWS = ("filters", "extra_tokens", "call_control_actions", "actions")
MAX_ROWS = 50  # rows of one list a form may post (bounded parsing)
MAX_FLOWS = 100
__all__ = ["ACTION_KINDS", "KEYS", "MODES"]

Posted = Mapping[str, str]  # one value per field name (checkbox groups read separately)


@dataclass
class RowMap:
    """Which form row each kept item came from: ``rows["flows"] == [0, 2]`` means the second
    flow in the data is form row 2 (row 1 was blank or removed); nested lists are keyed by
    their data path (``"flows[1].filters"``)."""

    rows: dict[str, list[int]] = field(default_factory=dict)

    def form_path(self, path: str) -> str:
        """``path`` in the data (``flows[1].filters[0].value``) as the form field's name."""
        out: list[str] = []
        data_prefix = ""
        for part in path.split("."):
            m = re.fullmatch(r"([A-Za-z_]\w*)\[(\d+)\]", part)
            if m is None:
                out.append(part)
                data_prefix = f"{data_prefix}.{part}" if data_prefix else part
                continue
            name, index = m.group(1), int(m.group(2))
            key = f"{data_prefix}.{name}" if data_prefix else name
            mapped = self.rows.get(key)
            form_index = mapped[index] if mapped and index < len(mapped) else index
            out.append(f"{name}[{form_index}]")
            data_prefix = f"{key}[{index}]"
        return ".".join(out)


def form_errors(message_lines: str, prefix: str, rows: RowMap) -> dict[str, str]:
    """``{form field name: message}`` from a ``CatalogError``'s lines
    (``console: flow_groups[0] (sales).flows[1].disposition: ...``), for one object at
    ``prefix`` (``flow_groups[0]``); a message about another object is keyed ``""``."""
    out: dict[str, str] = {}
    for line in message_lines.splitlines():
        _, _, rest = line.partition(": ")
        path, sep, message = rest.partition(": ")
        if not sep:
            path, message = "", rest
        path = re.sub(r" \([^)]*\)", "", path)
        if path == prefix:
            place = ""
        elif path.startswith(prefix + "."):
            place = rows.form_path(path[len(prefix) + 1:])
        else:
            place, message = "", f"{path}: {message}" if path else message
        out[place] = f"{out[place]}; {message}" if place in out else message
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else ""
    return str(value)


def _number(text: str) -> Any:
    """A whole number when the text is one, else the text (the model names the problem)."""
    t = text.strip()
    return int(t) if re.fullmatch(r"-?\d{1,9}", t) else t


def _float(text: str) -> Any:
    t = text.strip()
    try:
        return float(t)
    except ValueError:
        return t


def _count(form: Posted, name: str, limit: int = MAX_ROWS) -> int:
    text = form.get(name, "0")
    return min(int(text), limit) if text.isdigit() else 0


# ---- flow groups ----------------------------------------------------------------------------


def group_fields(group: FlowGroup) -> dict[str, str]:
    """A stored flow group as form values, with one blank row after each list."""
    f: dict[str, str] = {
        "name": group.name, "redirect_no_key_press": _text(group.redirect_no_key_press),
        "max_attempts": str(group.max_attempts),
        "pass_through_digits": _text(group.pass_through_digits),
        "flow_count": str(len(group.flows) + 1),
    }
    for mode in group.modes:
        f[f"modes.{mode}"] = "on"
    for i, flow in enumerate(group.flows):
        p = f"flows[{i}]"
        f[f"{p}.key"], f[f"{p}.name"] = flow.key, _text(flow.name)
        f[f"{p}.disposition"] = _text(flow.disposition)
        f[f"{p}.continue_routing"] = _text(flow.continue_routing)
        f[f"{p}.buyer_conference_time_limit"] = _text(flow.buyer_conference_time_limit)
        for j, flt in enumerate(flow.filters):
            f[f"{p}.filters[{j}].token"], f[f"{p}.filters[{j}].op"] = flt.token, flt.op
            v = flt.value
            f[f"{p}.filters[{j}].value"] = ", ".join(v) if isinstance(v, tuple) else _text(v)
        for j, (name, value) in enumerate(flow.extra_tokens.items()):
            f[f"{p}.extra_tokens[{j}].name"], f[f"{p}.extra_tokens[{j}].value"] = name, value
        for j, act in enumerate(flow.call_control_actions):
            q = f"{p}.call_control_actions[{j}]"
            f[f"{q}.kind"], f[f"{q}.media"] = act.kind, _text(act.media)
            f[f"{q}.to"], f[f"{q}.reason"] = act.to, _text(act.reason)
        for j, action in enumerate(flow.actions):
            q, hook = f"{p}.actions[{j}].webhook", action.webhook
            f[f"{q}.url"], f[f"{q}.method"] = hook.url, hook.method
            f[f"{q}.headers"] = "\n".join(f"{k}: {v}" for k, v in hook.headers.items())
            f[f"{q}.body"] = "" if hook.body is None else json.dumps(hook.body, indent=1)
        for rows, n in (("filters", len(flow.filters)), ("extra_tokens", len(flow.extra_tokens)),
                        ("call_control_actions", len(flow.call_control_actions)),
                        ("actions", len(flow.actions))):
            f[f"{p}.{rows}_count"] = str(n + 1)
    last = f"flows[{len(group.flows)}]"
    for rows in FLOW_ROWS:
        f[f"{last}.{rows}_count"] = "1"
    return f


def _filter(form: Posted, q: str) -> dict[str, Any] | None:
    token, op = form.get(f"{q}.token", "").strip(), form.get(f"{q}.op", "==")
    value = form.get(f"{q}.value", "")
    if not token and not value.strip():
        return None
    out: dict[str, Any] = {"token": token, "op": op}
    if op in LIST_OPS:
        out["value"] = [v.strip() for v in value.split(",") if v.strip()]
    elif op in ORDERING:
        number = _number(value)
        out["value"] = _float(value) if isinstance(number, str) else number
    elif op not in BARE_OPS or value.strip():
        out["value"] = value
    return out


def _action(form: Posted, q: str) -> dict[str, Any] | None:
    kind = form.get(f"{q}.kind", "")
    if not kind:
        return None
    out: dict[str, Any] = {"kind": kind}
    for name in ("media", "reason"):
        if form.get(f"{q}.{name}", "").strip():
            out[name] = form[f"{q}.{name}"].strip()
    if form.get(f"{q}.to", "consumer") != "consumer":
        out["to"] = form[f"{q}.to"]
    return out


class FieldProblem(ValueError):
    """A field the form itself cannot read (a body that is not JSON, a header line)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path, self.message = path, message


def _webhook(form: Posted, q: str) -> dict[str, Any] | None:
    url = form.get(f"{q}.webhook.url", "").strip()
    if not url:
        return None
    hook: dict[str, Any] = {"url": url, "method": form.get(f"{q}.webhook.method", "POST")}
    headers: dict[str, str] = {}
    for n, line in enumerate(form.get(f"{q}.webhook.headers", "").splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise FieldProblem(f"{q}.webhook.headers", f"line {n}: write it as Name: value")
        headers[name.strip()] = value.strip()
    if headers:
        hook["headers"] = headers
    body = form.get(f"{q}.webhook.body", "").strip()
    if body:
        try:
            hook["body"] = json.loads(body)
        except json.JSONDecodeError as exc:
            raise FieldProblem(f"{q}.webhook.body", f"not JSON: {exc.msg} (line {exc.lineno})")\
                from None
    return {"webhook": hook}


def _tokens(form: Posted, p: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for j in range(_count(form, f"{p}.extra_tokens_count")):
        name = form.get(f"{p}.extra_tokens[{j}].name", "").strip()
        if name:
            out[name] = form.get(f"{p}.extra_tokens[{j}].value", "")
    return out


def _flow(form: Posted, p: str, data_p: str, rows: RowMap) -> dict[str, Any]:
    flow: dict[str, Any] = {"key": form.get(f"{p}.key", "")}
    for name in ("name", "disposition"):
        if form.get(f"{p}.{name}", "").strip():
            flow[name] = form[f"{p}.{name}"].strip()
    limit = form.get(f"{p}.buyer_conference_time_limit", "").strip()
    if limit:
        flow["buyer_conference_time_limit"] = _number(limit)
    flow["continue_routing"] = bool(form.get(f"{p}.continue_routing"))
    readers: dict[str, Callable[[str], Any]] = {
        "filters": lambda q: _filter(form, q),
        "call_control_actions": lambda q: _action(form, q),
        "actions": lambda q: _webhook(form, q),
    }
    for name, read in readers.items():
        kept: list[Any] = []
        where: list[int] = []
        for j in range(_count(form, f"{p}.{name}_count")):
            item = read(f"{p}.{name}[{j}]")
            if item is not None:
                kept.append(item)
                where.append(j)
        if kept:
            flow[name] = kept
        rows.rows[f"{data_p}.{name}"] = where
    tokens = _tokens(form, p)
    if tokens:
        flow["extra_tokens"] = tokens
    return flow


def parse_group(form: Posted, name: str) -> tuple[dict[str, Any], RowMap]:
    """A posted flow group form as ``flows import`` data (raises :class:`FieldProblem`)."""
    rows = RowMap()
    group: dict[str, Any] = {
        "name": name, "redirect_no_key_press": bool(form.get("redirect_no_key_press")),
        "max_attempts": _number(form.get("max_attempts", "")),
        "pass_through_digits": bool(form.get("pass_through_digits")),
        "modes": [m for m in MODES if form.get(f"modes.{m}")],
    }
    flows: list[dict[str, Any]] = []
    where: list[int] = []
    for i in range(_count(form, "flow_count", MAX_FLOWS)):
        p = f"flows[{i}]"
        if form.get(f"{p}.remove") or not form.get(f"{p}.key"):
            continue
        flows.append(_flow(form, p, f"flows[{len(flows)}]", rows))
        where.append(i)
    group["flows"] = flows
    rows.rows["flows"] = where
    return group, rows


# ---- routers, buyers, numbers ---------------------------------------------------------------

# (field, label, input type, help); input types: text, number, checkbox, group, router, rows
SIMPLE_FIELDS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "routers": (
        ("prompt", "Prompt", "text", "media, e.g. sound:press-1"),
        ("request_key_press", "Request key press", "checkbox", "play the prompt, wait"),
        ("press_1_timeout", "Press 1 timeout (s)", "number", "seconds after the prompt"),
        ("flow_group", "Flow group", "group", "the caller's flows"),
        ("buyers", "Buyers, in order", "rows", "one buyer per row"),
        ("no_buyer_prompt", "No buyer prompt", "text", "played before hang-up"),
    ),
    "buyers": (
        ("endpoint", "Endpoint", "text", "e.g. PJSIP/buyer1"),
        ("ring_timeout", "Ring timeout (s)", "number", ""),
        ("enabled", "Enabled", "checkbox", ""),
        ("max_concurrency", "Max concurrency", "number", "blank: no limit"),
        ("forwards_to_external_agent", "Forwards to external agent", "checkbox",
         "the agent's key presses run the flow group"),
        ("flow_group", "Flow group", "group", "the agent's flows"),
    ),
    "numbers": (
        ("router", "Router", "router", ""),
        ("keypress_controls", "Key press call controls", "checkbox",
         "the forwarding call center may press keys"),
        ("flow_group", "Flow group", "group", ""),
    ),
}
MODEL_OF = {"routers": Router, "buyers": Buyer, "numbers": Number}


def simple_fields(kind: str, item: Router | Buyer | Number) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, _, kind_of, _ in SIMPLE_FIELDS[kind]:
        value = getattr(item, name)
        if kind_of == "rows":
            for j, v in enumerate(value):
                out[f"{name}[{j}]"] = v
            out[f"{name}_count"] = str(len(value) + 1)
        else:
            out[name] = _text(value)
    return out


def parse_simple(kind: str, form: Posted, name: str) -> tuple[dict[str, Any], RowMap]:
    key = "number" if kind == "numbers" else "name"
    data: dict[str, Any] = {key: name}
    rows = RowMap()
    for fname, _, kind_of, _ in SIMPLE_FIELDS[kind]:
        text = form.get(fname, "").strip()
        if kind_of == "checkbox":
            data[fname] = bool(text)
        elif kind_of == "rows":
            kept, where = [], []
            for j in range(_count(form, f"{fname}_count")):
                v = form.get(f"{fname}[{j}]", "").strip()
                if v:
                    kept.append(v)
                    where.append(j)
            data[fname] = kept
            rows.rows[fname] = where
        elif text:
            data[fname] = _float(text) if fname == "press_1_timeout" else (
                _number(text) if kind_of == "number" else text)
    return data, rows
