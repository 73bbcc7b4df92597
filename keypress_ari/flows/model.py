"""The flow catalog: flow groups (key press flows), routers, buyers and numbers.

All models are frozen pydantic v2 models with ``extra="forbid"``; the syntax of names,
tokens, keys, media and dispositions is in ``flows.syntax``.

Flow labels: a flow does not know its position, so labels come from its group:
``FlowGroup.label(position)`` is the flow's name when set, else ``"key {key} #{n}"`` where *n*
is the 1-based ordinal of the flow among the group's flows for that key (``key 1 #2`` is the
second flow for key 1). ``Flow.label_for(n)`` is the same rule given the ordinal.

Call control actions and webhook actions (``Flow.actions``) are in ``flows.actions``.

``Catalog`` checks unique names and that every reference resolves, except in a *partial*
catalog (``Catalog.partial(...)``: to be merged with stored data by ``import_catalog``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, Self, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from keypress_ari.flows.actions import ACTION_KINDS as ACTION_KINDS
from keypress_ari.flows.actions import CallControlAction as CallControlAction
from keypress_ari.flows.actions import FlowAction as FlowAction
from keypress_ari.flows.actions import Webhook as Webhook
from keypress_ari.flows.actions import template_tokens
from keypress_ari.flows.errors import CatalogProblem, Loc, format_loc
from keypress_ari.flows.modes import MODES, Mode, check_assignments, check_group_modes
from keypress_ari.flows.syntax import (
    KEYS,
    NO_KEY_PRESS,
    NUMBER_RE,
    ORDERING_OPS,
    TOKEN_RE,
    Disposition,
    Endpoint,
    FilterOp,
    Media,
    Name,
    PreparedValue,
    TokenName,
    check,
    parse_number,
    scalar_text,
)


def _private(model: BaseModel) -> dict[str, Any]:
    """A model's private attributes. Read on the key press path: going through pydantic's
    ``__getattr__`` for them cost more than the flow match itself (bench/profile_hot.py)."""
    return model.__pydantic_private__  # type: ignore[return-value]

class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Filter(_Frozen):
    """A condition on one call-data token. See ``flows.filters`` for the semantics.

    ``in``/``not_in`` values are stored as a tuple of strings (YAML scalars in the list are
    turned into their string form) so that filters stay hashable.
    """

    token: TokenName
    op: FilterOp
    value: str | int | float | bool | tuple[str, ...] | None = None

    _prep: PreparedValue = PrivateAttr(default_factory=lambda: PreparedValue())

    @field_validator("value", mode="before")
    @classmethod
    def _value_shape(cls, v: Any) -> Any:
        if isinstance(v, list | tuple):
            if not all(isinstance(i, str | int | float | bool) for i in v):
                raise ValueError("list items must be strings or numbers")
            return tuple(scalar_text(i) for i in v)
        if v is None or isinstance(v, str | int | float | bool):
            return v
        raise ValueError("must be a string, number, boolean or a list of strings")

    @model_validator(mode="after")
    def _prepare(self) -> Filter:
        op, v = self.op, self.value
        if op in ("exists", "not_exists"):
            if v is not None:
                raise ValueError(f"op {op} takes no value")
        elif op in ("in", "not_in"):
            if not isinstance(v, tuple):
                raise ValueError(f"op {op} needs a list value")
            self._prep = PreparedValue(choices=frozenset(v))
        elif v is None or isinstance(v, tuple):
            raise ValueError(f"op {op} needs a single (scalar) value")
        elif op in ORDERING_OPS:
            number = None if isinstance(v, bool) else parse_number(str(v))
            if number is None or math.isnan(number):
                raise ValueError(f"op {op} needs a numeric value, got {v!r}")
            self._prep = PreparedValue(text=str(v), number=number)
        elif op in ("=~", "!~"):
            if not isinstance(v, str):
                raise ValueError(f"op {op} needs a regular expression string")
            try:
                self._prep = PreparedValue(text=v, pattern=re.compile(v))
            except re.error as exc:
                raise ValueError(f"invalid regular expression {v!r}: {exc}") from None
        else:
            self._prep = PreparedValue(text=scalar_text(v))
        return self

    @property
    def prepared(self) -> PreparedValue:
        """The value in the forms matching needs, computed once at validation."""
        prep: PreparedValue = _private(self)["_prep"]
        return prep


class Flow(_Frozen):
    """What one key press does, when the flow's filters all match the call's data."""

    key: str
    name: Name | None = None
    filters: tuple[Filter, ...] = ()
    extra_tokens: dict[str, str] = Field(default_factory=dict)
    disposition: Disposition | None = None
    call_control_actions: tuple[CallControlAction, ...] = ()
    continue_routing: bool = False
    buyer_conference_time_limit: int | None = Field(default=None, gt=0, le=86400)
    actions: tuple[FlowAction, ...] = ()  # webhooks, sent after the key press

    @field_validator("key", mode="before")
    @classmethod
    def _key(cls, v: Any) -> Any:
        if type(v) is int and 0 <= v <= 9:
            v = str(v)
        if not isinstance(v, str) or v not in KEYS:
            raise ValueError(f"key must be 0-9, *, # or {NO_KEY_PRESS}, got {v!r}")
        return v

    @field_validator("extra_tokens", mode="before")
    @classmethod
    def _tokens(cls, v: Any) -> Any:
        if not isinstance(v, Mapping):
            return v
        out: dict[Any, Any] = {}
        for k, val in v.items():
            if isinstance(k, str):
                check(TOKEN_RE, k, "token name")
            if isinstance(val, bool):
                raise ValueError(f"extra token {k}: quote the value ({val!r} is a boolean)")
            out[k] = str(val) if isinstance(val, int | float) else val
        return out

    @model_validator(mode="after")
    def _coherent(self) -> Flow:
        if self.continue_routing:
            if self.disposition is not None:
                raise ValueError("continue_routing and disposition are mutually exclusive")
            if self.call_control_actions:
                raise ValueError("continue_routing and call_control_actions are mutually exclusive")
        elif not (
            self.disposition or self.call_control_actions or self.extra_tokens or self.actions
        ):
            what = "disposition, continue_routing, call_control_actions, extra_tokens or actions"
            raise ValueError(f"a flow must set a {what}")
        return self

    def label_for(self, ordinal: int) -> str:
        """The flow's name, else ``key {key} #{ordinal}`` (ordinal among flows for the key)."""
        return self.name if self.name is not None else f"key {self.key} #{ordinal}"


class FlowGroup(_Frozen):
    """Ordered flows; the first flow whose key matches and whose filters all match wins."""

    name: Name
    redirect_no_key_press: bool = True
    max_attempts: int = Field(default=3, ge=1, le=20)
    pass_through_digits: bool = False
    modes: tuple[Mode, ...] = ("stasis",)  # how its calls reach us (flows.modes)
    flows: tuple[Flow, ...]

    _by_key: dict[str, tuple[tuple[int, Flow], ...]] = PrivateAttr(default_factory=dict)
    _labels: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="after")
    def _index(self) -> FlowGroup:
        def problem(loc: Loc, message: str) -> CatalogProblem:
            return CatalogProblem(loc, format_loc(loc, self), message)

        names: dict[str, int] = {}
        by_key: dict[str, list[tuple[int, Flow]]] = {}
        labels: list[str] = []
        for pos, flow in enumerate(self.flows):
            if flow.name in names:
                also = names[flow.name]
                raise problem(("flows", pos, "name"), f"duplicate name (also flows[{also}])")
            if flow.name is not None:
                names[flow.name] = pos
            same_key = by_key.setdefault(flow.key, [])
            for prev_pos, prev in same_key:
                if not prev.filters:
                    raise problem(
                        ("flows", pos),
                        f"can never match: flows[{prev_pos}] for key {flow.key} has no filters",
                    )
            same_key.append((pos, flow))
            labels.append(flow.label_for(len(same_key)))
        self._by_key = {k: tuple(v) for k, v in by_key.items()}
        self._labels = tuple(labels)
        if not self.modes or len(set(self.modes)) != len(self.modes):
            raise problem(("modes",), f"list each mode once, at least one of {', '.join(MODES)}")
        check_group_modes(self, None, problem)
        return self


    def flows_for(self, key: str) -> tuple[tuple[int, Flow], ...]:
        """``(position, flow)`` pairs for ``key`` in file order (empty when none)."""
        by_key: dict[str, tuple[tuple[int, Flow], ...]] = _private(self)["_by_key"]
        return by_key.get(key, ())

    def label(self, position: int) -> str:
        """The label of the flow at ``position`` (see the module docstring)."""
        labels: tuple[str, ...] = _private(self)["_labels"]
        return labels[position]

    @property
    def labels(self) -> tuple[str, ...]:
        """Labels of all flows, by position."""
        return self._labels


class _UsesGroup(_Frozen):
    """Routers, buyers and numbers: a boolean feature that needs ``flow_group`` set."""

    group_flag: ClassVar[str]

    @model_validator(mode="after")
    def _needs_group(self) -> Self:
        if getattr(self, self.group_flag) and getattr(self, "flow_group", None) is None:
            raise ValueError(f"{self.group_flag} needs a flow_group")
        return self


class Router(_UsesGroup):
    group_flag = "request_key_press"
    name: Name
    request_key_press: bool = True
    prompt: Media | None = None
    press_1_timeout: float = Field(default=5.0, gt=0, le=300)
    flow_group: Name | None = None
    buyers: tuple[Name, ...] = ()
    no_buyer_prompt: Media | None = None  # played before hanging up when no buyer is left

    @field_validator("buyers")
    @classmethod
    def _buyers(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError("a buyer is listed twice")
        return v


class Buyer(_UsesGroup):
    group_flag = "forwards_to_external_agent"
    name: Name
    endpoint: Endpoint
    ring_timeout: int = Field(default=20, ge=1, le=600)
    enabled: bool = True
    max_concurrency: int | None = Field(default=None, ge=1)
    forwards_to_external_agent: bool = False
    flow_group: Name | None = None


class Number(_UsesGroup):
    group_flag = "keypress_controls"
    number: str
    router: Name
    keypress_controls: bool = False
    flow_group: Name | None = None

    @field_validator("number", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        if type(v) is int and v >= 0:
            v = str(v)
        return check(NUMBER_RE, v, "number") if isinstance(v, str) else v


def _index(catalog: Catalog, kind: str, field: str) -> dict[str, Any]:
    """``{name: item}`` for one kind of catalog object, rejecting duplicate names."""
    seen: dict[str, Any] = {}
    for i, item in enumerate(getattr(catalog, kind)):
        key = getattr(item, field)
        if key in seen:
            loc: Loc = (kind, i, field)
            also = f"{kind}[{list(seen).index(key)}]"
            raise CatalogProblem(loc, format_loc(loc, catalog), f"duplicate {key!r} (also {also})")
        seen[key] = item
    return seen


class Catalog(_Frozen):
    flow_groups: tuple[FlowGroup, ...] = ()
    routers: tuple[Router, ...] = ()
    buyers: tuple[Buyer, ...] = ()
    numbers: tuple[Number, ...] = ()

    _by_kind: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)
    _tokens: frozenset[str] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Catalog:
        self._by_kind = {
            "flow group": _index(self, "flow_groups", "name"),
            "router": _index(self, "routers", "name"),
            "buyer": _index(self, "buyers", "name"),
            "number": _index(self, "numbers", "number"),
        }
        if not (info.context or {}).get("partial"):
            for loc, what, name in self.references():
                if name not in self._by_kind[what]:
                    raise CatalogProblem(loc, format_loc(loc, self), f"unknown {what} {name!r}")
            check_assignments(self, self._by_kind["flow group"])
        return self

    def references(self) -> Iterator[tuple[Loc, str, str]]:
        """Every reference as ``(location, kind, name)``; kind is ``flow group``, ``router``
        or ``buyer``."""
        for i, r in enumerate(self.routers):
            if r.flow_group is not None:
                yield ("routers", i, "flow_group"), "flow group", r.flow_group
            for j, buyer in enumerate(r.buyers):
                yield ("routers", i, "buyers", j), "buyer", buyer
        for i, b in enumerate(self.buyers):
            if b.flow_group is not None:
                yield ("buyers", i, "flow_group"), "flow group", b.flow_group
        for i, n in enumerate(self.numbers):
            yield ("numbers", i, "router"), "router", n.router
            if n.flow_group is not None:
                yield ("numbers", i, "flow_group"), "flow group", n.flow_group

    @classmethod
    def empty(cls) -> Catalog:
        return cls()

    @classmethod
    def partial(cls, **parts: Any) -> Catalog:
        """A catalog whose references may point outside it (to be merged with stored data)."""
        return cls.model_validate(parts, context={"partial": True})

    def number(self, number: str) -> Number | None:
        return cast("Number | None", _private(self)["_by_kind"]["number"].get(number))

    def router(self, name: str) -> Router | None:
        return cast("Router | None", _private(self)["_by_kind"]["router"].get(name))

    def buyer(self, name: str) -> Buyer | None:
        return cast("Buyer | None", _private(self)["_by_kind"]["buyer"].get(name))

    def flow_group(self, name: str) -> FlowGroup | None:
        return cast("FlowGroup | None", _private(self)["_by_kind"]["flow group"].get(name))

    def referenced_tokens(self) -> frozenset[str]:
        """Every token name a filter or a webhook template uses (the daemon reads them from
        ``KEYPRESS_TOKEN_<NAME>`` channel variables when a call starts)."""
        if self._tokens is not None:
            return self._tokens
        names: set[str] = set()
        for group in self.flow_groups:
            for flow in group.flows:
                names.update(f.token for f in flow.filters)
                for action in flow.actions:
                    names |= template_tokens(action.webhook.url)
                    names |= template_tokens(action.webhook.body)
        self._tokens = frozenset(names)
        return self._tokens
