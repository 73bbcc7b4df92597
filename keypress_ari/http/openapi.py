"""The OpenAPI 3.1 description of the admin API, served at ``/openapi.json``.

Hand-written route table; the catalog schemas come from the pydantic models
(``model_json_schema``), so they follow the models' fields.
"""

from __future__ import annotations

from typing import Any

from keypress_ari.calllog.kinds import PRESS_OUTCOMES, EventKind
from keypress_ari.flows.model import Catalog, Flow
from keypress_ari.http.calls_routes import SimulateRequest

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = _json(_ref("Error"), "error")
_ERRORS = {"401": _json(_ref("Error"), "missing or wrong bearer token")}


def _op(summary: str, ok: dict[str, Any], *, status: str = "200", body: str | None = None,
        errors: tuple[str, ...] = (), params: tuple[dict[str, Any], ...] = (),
        public: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {status: ok}}
    if status == "201":
        op["responses"]["200"] = ok  # PUT answers 201 when created, 200 when replaced
    for code in errors:
        op["responses"][code] = _ERROR
    if not public:
        op["responses"].update(_ERRORS)
    else:
        op["security"] = []
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": _ref(body)}}}
    if params:
        op["parameters"] = list(params)
    return op


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


_CRUD = (("flow-groups", "name", "FlowGroup", "flow group"),
         ("routers", "name", "Router", "router"),
         ("buyers", "name", "Buyer", "buyer"),
         ("numbers", "number", "Number", "number"))
_WRITTEN = {"type": "object", "properties": {
    "version": {"type": "integer"}, "created": {"type": "boolean"}, "item": {}}}
_DELETED = {"type": "object", "properties": {"deleted": {}, "version": {"type": "integer"}}}


def _catalog_paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for segment, key, model, what in _CRUD:
        one = f"/{segment}/{{{key}}}"
        paths[f"/{segment}"] = {"get": _op(f"list {what}s", _json(
            {"type": "array", "items": _ref(model)}, f"every {what}"))}
        paths[one] = {
            "parameters": [_path_param(key)],
            "get": _op(f"one {what}", _json(_ref(model), what), errors=("404",)),
            "put": _op(f"create or replace a {what} (the {key} in the path wins)",
                       _json(_WRITTEN, "stored"), status="201", body=model,
                       errors=("400", "422")),
            "delete": _op(f"delete a {what} (409 while it is referenced)",
                          _json(_DELETED, "deleted"), errors=("404", "409")),
        }
    flows = "/flow-groups/{name}/flows"
    flow_written = {"type": "object", "properties": {
        "version": {"type": "integer"}, "index": {"type": "integer"},
        "label": {"type": "string"}, "item": _ref("Flow")}}
    paths[flows] = {
        "parameters": [_path_param("name")],
        "get": _op("the group's flows, by index", _json(
            {"type": "array", "items": _ref("Flow")}, "flows"), errors=("404",)),
        "post": _op("append a flow", _json(flow_written, "added"), status="201", body="Flow",
                    errors=("400", "404", "422")),
    }
    paths[flows + "/{index}"] = {
        "parameters": [_path_param("name"), {"name": "index", "in": "path", "required": True,
                                             "schema": {"type": "integer", "minimum": 0}}],
        "get": _op("one flow", _json(_ref("Flow"), "flow"), errors=("404",)),
        "put": _op("replace a flow", _json(flow_written, "replaced"), body="Flow",
                   errors=("400", "404", "422")),
        "delete": _op("remove a flow (later flows move up)", _json(_DELETED, "deleted"),
                      errors=("404",)),
    }
    return paths


def _other_paths() -> dict[str, Any]:
    blocked = {"type": "object", "properties": {
        "caller_number": {"type": "string"}, "reason": {"type": "string"},
        "call_id": {"type": ["string", "null"]}, "created_at": {"type": "string"}}}
    any_object = {"type": "object"}
    calls_page = {"type": "object", "properties": {
        "calls": {"type": "array", "items": any_object},
        "next_cursor": {"type": ["string", "null"]}}}
    return {
        "/blocklist": {"get": _op("blocked callers", _json(
            {"type": "array", "items": blocked}, "blocklist"))},
        "/blocklist/{number}": {
            "parameters": [_path_param("number")],
            "put": _op("block a caller (body: optional {\"reason\": ...})",
                       _json(blocked, "blocked"), status="201", errors=("400", "422")),
            "delete": _op("unblock a caller", _json(_DELETED, "unblocked"), errors=("404",)),
        },
        "/calls": {"get": _op("calls, newest first, paged", _json(calls_page, "a page"),
                              errors=("400",), params=(
            _query("number", "the dialled number"),
            _query("disposition", "the call's disposition"),
            _query("since", "ISO 8601, inclusive", {"type": "string", "format": "date-time"}),
            _query("until", "ISO 8601, exclusive", {"type": "string", "format": "date-time"}),
            _query("limit", "1-1000, default 50", {"type": "integer"}),
            _query("cursor", "next_cursor of the previous page")))},
        "/calls/{call_id}": {
            "parameters": [_path_param("call_id")],
            "get": _op("a call and its events", _json({"type": "object", "properties": {
                "call": any_object, "events": {"type": "array", "items": _ref("CallEvent")}}},
                "call"), errors=("404",)),
        },
        "/simulate": {"post": _op(
            "dry run of a key press against the stored catalog (touches nothing)",
            _json(_ref("SimulationResult"), "what would happen"), body="SimulateRequest",
            errors=("400", "422"))},
        "/healthz": {"get": _op("the process is alive", _json(any_object, "alive"),
                                public=True)},
        "/readyz": {"get": _op("ARI connected and database reachable",
                               _json(any_object, "ready"), errors=("503",), public=True)},
        "/metrics": {"get": _op("Prometheus metrics", {
            "description": "text format 0.0.4",
            "content": {"text/plain": {"schema": {"type": "string"}}}})},
        "/openapi.json": {"get": _op("this document", _json(any_object, "OpenAPI 3.1"))},
    }


def _schemas() -> dict[str, Any]:
    catalog = Catalog.model_json_schema(ref_template=_REF)
    schemas: dict[str, Any] = dict(catalog.pop("$defs", {}))
    schemas["Catalog"] = catalog
    flow = Flow.model_json_schema(ref_template=_REF)
    schemas.update(flow.pop("$defs", {}))
    schemas.setdefault("Flow", flow)
    schemas["SimulateRequest"] = SimulateRequest.model_json_schema(ref_template=_REF)
    schemas["SimulationResult"] = {"type": "object", "properties": {
        "outcome": {"enum": ["matched", "no_match", "ignored", "no_flows", "invalid"]},
        "mode": {"enum": ["stasis", "fastagi", "ami"]},
        "moves_to_stasis": {"type": ["string", "null"]},
        "reason": {"type": "string"}, "group": {"type": ["string", "null"]},
        "call_data": {"type": "object", "additionalProperties": {"type": "string"}},
        "matched": {"type": ["string", "null"]},
        "misses": {"type": "array", "items": {"type": "object"}},
        "time_limit": {"type": ["object", "null"]},
        "would_run": {"type": ["object", "null"]}}}
    schemas["CallEvent"] = {"type": "object", "properties": {
        "seq": {"type": ["integer", "null"]}, "at": {"type": "string", "format": "date-time"},
        "leg": {"type": ["string", "null"]},
        "kind": {"type": "string", "enum": [k.value for k in EventKind]},
        "digit": {"type": ["string", "null"]}, "flow": {"type": ["string", "null"]},
        "detail": {"type": "object"},
        "outcome": {"type": "string", "enum": list(PRESS_OUTCOMES),
                    "description": "key_press rows only"}}}
    schemas["Error"] = {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "string"}, "path": {"type": "string"},
        "problems": {"type": "array", "items": {"type": "object", "properties": {
            "path": {"type": "string"}, "message": {"type": "string"}}}}}}
    return schemas


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "keypress-ari admin API", "version": "1"},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {**_catalog_paths(), **_other_paths()},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
        },
    }
