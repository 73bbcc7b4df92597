"""The console's catalog page: the whole catalog as YAML to read, download, edit or upload;
a preview of what a change does before it is saved; the validation messages of
``flows import`` (each names its place); a save in one transaction that the running daemon
picks up like an API change; refused when the catalog changed since the page was opened
(optimistic concurrency on the catalog version, never a silent overwrite); an audit row
per save, listed on the page.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from keypress_ari.console.common import _posted, _render, _session
from keypress_ari.flows.errors import CatalogError
from keypress_ari.flows.model import Catalog
from keypress_ari.flows.yamlio import dump_catalog_yaml, load_catalog_yaml
from keypress_ari.http.common import POOL
from keypress_ari.store import audit
from keypress_ari.store.catalog import (
    CatalogChanged,
    check_import,
    import_catalog,
    load_catalog_with_version,
)

MAX_YAML = 2_000_000  # bytes of an upload or an edit
SOURCE = "console"
KINDS = (("flow_groups", "name"), ("routers", "name"), ("buyers", "name"),
         ("numbers", "number"))


def changes(stored: Catalog, incoming: Catalog) -> list[str]:
    """What saving ``incoming`` (a partial catalog) over ``stored`` does, in words."""
    out: list[str] = []
    for kind, key in KINDS:
        before = {getattr(x, key): x for x in getattr(stored, kind)}
        for item in getattr(incoming, kind):
            name = getattr(item, key)
            old = before.get(name)
            label = kind.rstrip("s").replace("_", " ")
            if old is None:
                out.append(f"new {label} {name}")
            elif old.model_dump() != item.model_dump():
                out.append(f"changed {label} {name}")
    return out or ["nothing changes"]


async def _audit(request: web.Request) -> list[Any]:
    async with request.app[POOL].acquire() as conn:
        return await audit.recent(conn)


async def catalog_page(request: web.Request) -> web.Response:
    session = _session(request)
    async with request.app[POOL].acquire() as conn:
        version, catalog = await load_catalog_with_version(conn)
    return _render(request, "catalog.html", session=session, title="Catalog",
                   text=dump_catalog_yaml(catalog), version=version, preview=[], saved="",
                   audit=await _audit(request))


async def catalog_yaml(request: web.Request) -> web.Response:
    _session(request)
    async with request.app[POOL].acquire() as conn:
        version, catalog = await load_catalog_with_version(conn)
    return web.Response(text=dump_catalog_yaml(catalog), content_type="application/yaml",
                        headers={"Content-Disposition":
                                 f'attachment; filename="catalog-v{version}.yaml"'})


async def catalog_post(request: web.Request) -> web.Response:
    session, form = await _posted(request)
    upload = form.get("file")
    text = str(form.get("yaml", ""))
    if upload is not None and hasattr(upload, "file"):
        text = upload.file.read(MAX_YAML + 1).decode("utf-8", "replace")
    try:
        opened = int(str(form.get("version", "")))
    except ValueError:
        raise web.HTTPBadRequest(text="version: missing") from None
    values: dict[str, Any] = {"session": session, "title": "Catalog", "text": text,
                              "version": opened, "preview": [], "saved": ""}
    if len(text) > MAX_YAML:
        values["error"] = f"{SOURCE}: more than {MAX_YAML} bytes"
        return _render(request, "catalog.html", status=422, audit=await _audit(request),
                       **values)
    try:
        incoming = load_catalog_yaml(text, SOURCE, partial=True)
        async with request.app[POOL].acquire() as conn:
            if form.get("action") == "save":
                async with conn.transaction():
                    _, stored = await load_catalog_with_version(conn)
                    summary = await import_catalog(conn, incoming, source=SOURCE,
                                                   expected_version=opened)
                    await audit.add(conn, "admin token", "catalog saved",
                                    {"version": summary.version,
                                     "changes": changes(stored, incoming)})
                values.update(saved=str(summary), version=summary.version)
            else:
                _, stored = await load_catalog_with_version(conn)
                check_import(stored, incoming, SOURCE)
                values["preview"] = changes(stored, incoming)
    except CatalogError as exc:
        values["error"] = str(exc)
        return _render(request, "catalog.html", status=422, audit=await _audit(request),
                       **values)
    except CatalogChanged as exc:
        values["error"] = str(exc)
        return _render(request, "catalog.html", status=409, audit=await _audit(request),
                       **values)
    return _render(request, "catalog.html", audit=await _audit(request), **values)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/catalog", catalog_page)
    app.router.add_get("/console/catalog.yaml", catalog_yaml)
    app.router.add_post("/console/catalog", catalog_post)
