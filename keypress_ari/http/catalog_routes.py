"""CRUD for flow groups (and their flows by index), routers, buyers and numbers.

Writes are validated like a YAML import (``catalog_from_data(..., partial=True)`` with source
``request body``, then ``import_catalog``), so the messages are the same; paths are given
relative to the object sent (``request body: flow_group: unknown flow group 'x'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from keypress_ari.flows.errors import CatalogError
from keypress_ari.flows.model import Catalog, FlowGroup
from keypress_ari.flows.yamlio import catalog_from_data
from keypress_ari.http.common import (
    POOL,
    SOURCE,
    ApiError,
    Handler,
    catalog_problem,
    json_response,
    not_found,
    object_prefix,
    read_object,
)
from keypress_ari.store import admin
from keypress_ari.store.catalog import import_catalog, load_catalog


@dataclass(frozen=True, slots=True)
class Kind:
    path: str      # URL segment
    field: str     # Catalog field
    key: str       # the name field of the object
    admin: str     # store.admin kind
    what: str      # in messages

    def find(self, catalog: Catalog, name: str) -> Any:
        return next((x for x in getattr(catalog, self.field) if getattr(x, self.key) == name),
                    None)


KINDS = (
    Kind("flow-groups", "flow_groups", "name", "flow_group", "flow group"),
    Kind("routers", "routers", "name", "router", "router"),
    Kind("buyers", "buyers", "name", "buyer", "buyer"),
    Kind("numbers", "numbers", "number", "number", "number"),
)


def dump(model: Any) -> Any:
    return model.model_dump(mode="json")


async def _catalog(request: web.Request) -> Catalog:
    async with request.app[POOL].acquire() as conn:
        return await load_catalog(conn)


def _validate(kind: Kind, data: dict[str, Any], *prefixes: Any) -> Catalog:
    try:
        return catalog_from_data({kind.field: [data]}, SOURCE, partial=True)
    except CatalogError as exc:
        raise catalog_problem(exc, object_prefix(kind.field), *prefixes) from None


def _list(kind: Kind) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return json_response([dump(x) for x in getattr(await _catalog(request), kind.field)])
    return handler


def _get(kind: Kind) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        name = request.match_info[kind.key]
        found = kind.find(await _catalog(request), name)
        if found is None:
            raise not_found(f"no {kind.what} {name!r}")
        return json_response(dump(found))
    return handler


def _put(kind: Kind) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        name = request.match_info[kind.key]
        body = await read_object(request)
        given = body.get(kind.key, name)
        if str(given) != name:
            message = f"does not match the {kind.key} in the path ({name!r})"
            raise ApiError(422, f"{SOURCE}: {kind.key}: {message}", path=kind.key,
                           problems=[{"path": kind.key, "message": message}])
        catalog = _validate(kind, {**body, kind.key: name})
        async with request.app[POOL].acquire() as conn:
            try:
                summary = await import_catalog(conn, catalog, source=SOURCE)
            except CatalogError as exc:
                raise catalog_problem(exc, object_prefix(kind.field)) from None
        created = getattr(summary, kind.field).created > 0
        item = dump(getattr(catalog, kind.field)[0])
        return json_response({"version": summary.version, "created": created, "item": item},
                             status=201 if created else 200)
    return handler


def _delete(kind: Kind) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        name = request.match_info[kind.key]
        async with request.app[POOL].acquire() as conn:
            try:
                version = await admin.delete_object(conn, kind.admin, name)
            except admin.NotFound as exc:
                raise not_found(str(exc)) from None
            except admin.InUse as exc:
                raise ApiError(409, str(exc)) from None
        return json_response({"deleted": name, "version": version})
    return handler


# ---- flows of a group, by index -----------------------------------------------------------

GROUPS = KINDS[0]


def _index(request: web.Request, group: FlowGroup, *, allow_end: bool = False) -> int:
    raw = request.match_info["index"]
    limit = len(group.flows) + (1 if allow_end else 0)
    if not raw.isdigit() or int(raw) >= limit:
        raise not_found(f"flow group {group.name!r} has no flow at index {raw}")
    return int(raw)


def _group(catalog: Catalog, request: web.Request) -> FlowGroup:
    name = request.match_info["name"]
    group = catalog.flow_group(name)
    if group is None:
        raise not_found(f"no flow group {name!r}")
    return group


async def list_flows(request: web.Request) -> web.Response:
    group = _group(await _catalog(request), request)
    return json_response([dump(f) for f in group.flows])


async def get_flow(request: web.Request) -> web.Response:
    group = _group(await _catalog(request), request)
    return json_response(dump(group.flows[_index(request, group)]))


async def _edit_flows(request: web.Request, op: str) -> web.Response:
    """Read the group, change its flow list, import it back: one transaction, under the
    import lock. ``op`` is ``add``, ``put`` or ``delete``."""
    body = await read_object(request) if op != "delete" else {}
    async with request.app[POOL].acquire() as conn, admin.catalog_edit(conn) as stored:
        group = _group(stored, request)
        flows: list[Any] = [dump(f) for f in group.flows]
        if op == "add":
            index = len(flows)
            flows.append(body)
        else:
            index = _index(request, group)
            if op == "put":
                flows[index] = body
            else:
                del flows[index]
        data = {**dump(group), "flows": flows}
        prefixes = [object_prefix("flows", index)] if op != "delete" else []
        catalog = _validate(GROUPS, data, *prefixes)
        try:
            summary = await import_catalog(conn, catalog, source=SOURCE)
        except CatalogError as exc:
            raise catalog_problem(exc, object_prefix(GROUPS.field), *prefixes) from None
    new_group = catalog.flow_groups[0]
    out: dict[str, Any] = {"version": summary.version, "index": index}
    if op == "delete":
        out["deleted"] = index
    else:
        out["label"] = new_group.label(index)
        out["item"] = dump(new_group.flows[index])
    return json_response(out, status=201 if op == "add" else 200)


async def add_flow(request: web.Request) -> web.Response:
    return await _edit_flows(request, "add")


async def put_flow(request: web.Request) -> web.Response:
    return await _edit_flows(request, "put")


async def delete_flow(request: web.Request) -> web.Response:
    return await _edit_flows(request, "delete")


def add_routes(app: web.Application) -> None:
    for kind in KINDS:
        base = f"/{kind.path}"
        one = base + "/{" + kind.key + "}"
        app.router.add_get(base, _list(kind))
        app.router.add_get(one, _get(kind))
        app.router.add_put(one, _put(kind))
        app.router.add_delete(one, _delete(kind))
    app.router.add_get("/flow-groups/{name}/flows", list_flows)
    app.router.add_post("/flow-groups/{name}/flows", add_flow)
    app.router.add_get("/flow-groups/{name}/flows/{index}", get_flow)
    app.router.add_put("/flow-groups/{name}/flows/{index}", put_flow)
    app.router.add_delete("/flow-groups/{name}/flows/{index}", delete_flow)
