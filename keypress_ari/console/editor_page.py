"""The console's per-object editors: a flow group with its flows, a router, a buyer, a
number, and the blocklist.

A save validates like ``flows import`` (the messages are the same, each shown next to the
field it names), writes in one transaction through ``import_catalog`` (so the running daemon
picks it up like an API change) and adds an audit row. Each form carries the fingerprint of
the object as it was opened: a save over an object someone else changed since is refused
(409, "changed since you opened it", nothing written), never a silent overwrite.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from keypress_ari.console import forms
from keypress_ari.console.common import _posted, _render, _session
from keypress_ari.flows.errors import CatalogError
from keypress_ari.flows.model import Catalog
from keypress_ari.flows.yamlio import catalog_from_data
from keypress_ari.http.calls_routes import CALLER_RE
from keypress_ari.http.common import POOL
from keypress_ari.store import admin, audit
from keypress_ari.store.catalog import (
    KEY_OF,
    ObjectChanged,
    fingerprint,
    import_catalog,
    load_catalog,
)

NEW = "_new"
SOURCE = "console"
LABEL = {"flow_groups": "flow group", "routers": "router", "buyers": "buyer",
         "numbers": "number"}


def _kind(request: web.Request) -> str:
    kind = request.match_info["kind"]
    if kind not in LABEL:
        raise web.HTTPNotFound(text=f"no catalog kind {kind!r}")
    return kind


def _find(catalog: Catalog, kind: str, name: str) -> Any:
    return next((x for x in getattr(catalog, kind) if getattr(x, KEY_OF[kind]) == name), None)


def _fields(kind: str, item: Any) -> dict[str, str]:
    if item is None:
        blank = {"flow_count": "1"} if kind == "flow_groups" else {}
        if kind == "flow_groups":
            blank.update({"redirect_no_key_press": "on", "max_attempts": "3",
                          "modes.stasis": "on"})
            blank.update({f"flows[0].{rows}_count": "1" for rows in forms.FLOW_ROWS})
        elif kind == "routers":
            blank.update({"request_key_press": "on", "press_1_timeout": "5.0",
                          "buyers_count": "1"})
        elif kind == "buyers":
            blank.update({"ring_timeout": "20", "enabled": "on"})
        return blank
    return forms.group_fields(item) if kind == "flow_groups" else \
        forms.simple_fields(kind, item)


async def _page(request: web.Request, kind: str, name: str, f: dict[str, str], opened: str,
                status: int = 200, errors: dict[str, str] | None = None, saved: str = "",
                problem: str = "") -> web.Response:
    async with request.app[POOL].acquire() as conn:
        catalog = await load_catalog(conn)
    template = "edit_group.html" if kind == "flow_groups" else "edit_object.html"
    errors = errors or {}
    title = f"New {LABEL[kind]}" if name == NEW else f"{LABEL[kind].capitalize()} {name}"
    return _render(
        request, template, status=status, session=_session(request), title=title, kind=kind,
        name=name, new=name == NEW, f=f, opened=opened, errors=errors, saved=saved,
        error=problem or errors.get("", ""), forms=forms, label=LABEL[kind],
        specs=forms.SIMPLE_FIELDS.get(kind, ()),
        groups=[g.name for g in catalog.flow_groups], routers=[r.name for r in catalog.routers],
        buyers=[b.name for b in catalog.buyers])


async def edit_page(request: web.Request) -> web.Response:
    _session(request)
    kind, name = _kind(request), request.match_info["name"]
    item = None
    if name != NEW:
        async with request.app[POOL].acquire() as conn:
            item = _find(await load_catalog(conn), kind, name)
        if item is None:
            raise web.HTTPNotFound(text=f"no {LABEL[kind]} {name!r}")
    return await _page(request, kind, name, _fields(kind, item),
                       "" if item is None else fingerprint(item),
                       saved="saved" if request.query.get("saved") else "")


def _more_rows(f: dict[str, str]) -> dict[str, str]:
    """Every list of the form with one more blank row (the "More rows" button)."""
    out = dict(f)
    for k, v in f.items():
        if k.endswith("_count") and v.isdigit():
            out[k] = str(int(v) + 1)
    for i in range(int(out.get("flow_count", "0") or 0)):
        for rows in forms.FLOW_ROWS:
            out.setdefault(f"flows[{i}].{rows}_count", "1")
    return out


async def edit_post(request: web.Request) -> web.Response:
    _, form = await _posted(request)
    kind, name = _kind(request), request.match_info["name"]
    f = {k: str(v) for k, v in form.items() if isinstance(v, str)}
    opened = f.pop("opened", "")
    if form.get("action") == "rows":
        return await _page(request, kind, name, _more_rows(f), opened)
    target = f.get(KEY_OF[kind], "").strip() if name == NEW else name
    try:
        if kind == "flow_groups":
            data, rows = forms.parse_group(f, target)
        else:
            data, rows = forms.parse_simple(kind, f, target)
    except forms.FieldProblem as exc:
        return await _page(request, kind, name, f, opened, 422, {exc.path: exc.message})
    try:
        incoming = catalog_from_data({kind: [data]}, SOURCE, partial=True)
        async with request.app[POOL].acquire() as conn, conn.transaction():
            summary = await import_catalog(conn, incoming, source=SOURCE,
                                           expected={(kind, target): opened or None})
            await audit.add(conn, "admin token", f"{LABEL[kind]} saved",
                            {"name": target, "version": summary.version,
                             "new": name == NEW})
            saved = _find(await load_catalog(conn), kind, target)
    except CatalogError as exc:
        errors = forms.form_errors(str(exc), f"{kind}[0]", rows)
        return await _page(request, kind, name, f, opened, 422, errors)
    except ObjectChanged as exc:
        return await _page(request, kind, name, f, opened, 409, problem=str(exc))
    if name == NEW:
        raise web.HTTPSeeOther(f"/console/catalog/{kind}/{target}?saved=1")
    return await _page(request, kind, name, _fields(kind, saved), fingerprint(saved),
                       saved=f"saved: catalog version {summary.version}")


async def delete_post(request: web.Request) -> web.Response:
    _, form = await _posted(request)
    kind, name = _kind(request), request.match_info["name"]
    problem = ""
    async with request.app[POOL].acquire() as conn, conn.transaction():
        item = _find(await load_catalog(conn), kind, name)
        if item is None:
            raise web.HTTPNotFound(text=f"no {LABEL[kind]} {name!r}")
        if fingerprint(item) != str(form.get("opened", "")):
            problem = str(ObjectChanged(kind, name, created=False))
        else:
            try:
                await admin.delete_object(conn, kind.rstrip("s"), name)
            except (admin.NotFound, admin.InUse) as exc:
                problem = f"not deleted: {exc}"
            else:
                await audit.add(conn, "admin token", f"{LABEL[kind]} deleted", {"name": name})
    if problem:
        return await _page(request, kind, name, _fields(kind, item), fingerprint(item), 409,
                           problem=problem)
    raise web.HTTPSeeOther("/console/catalog")


async def blocklist_page(request: web.Request, status: int = 200, error: str = ""
                         ) -> web.Response:
    session = _session(request)
    async with request.app[POOL].acquire() as conn:
        blocked = await admin.list_blocked(conn)
    return _render(request, "blocklist.html", status=status, session=session,
                   title="Blocklist", blocked=blocked, error=error)


async def blocklist_post(request: web.Request) -> web.Response:
    _, form = await _posted(request)
    number = str(form.get("number", "")).strip()
    async with request.app[POOL].acquire() as conn:
        if form.get("action") == "remove":
            await admin.remove_blocked(conn, number)
            what = "caller unblocked"
        else:
            reason = str(form.get("reason", "")).strip()
            if not CALLER_RE.match(number):
                return await blocklist_page(
                    request, 422, "number: must be 1 to 64 characters without spaces")
            if len(reason) > 200:
                return await blocklist_page(request, 422, "reason: at most 200 characters")
            await admin.add_blocked(conn, number, reason)
            what = "caller blocked"
        await audit.add(conn, "admin token", what, {"number": number})
    raise web.HTTPSeeOther("/console/blocklist")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/blocklist", blocklist_page)
    app.router.add_post("/console/blocklist", blocklist_post)
    app.router.add_get("/console/catalog/{kind}/{name}", edit_page)
    app.router.add_post("/console/catalog/{kind}/{name}", edit_post)
    app.router.add_post("/console/catalog/{kind}/{name}/delete", delete_post)
