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


def _objects(catalog: Catalog) -> list[tuple[str, str, list[str]]]:
    """``(kind, label, names)`` rows of the catalog's object list (links to the editors)."""
    return [(kind, kind.rstrip("s").replace("_", " "),
             [getattr(x, key) for x in getattr(catalog, kind)]) for kind, key in KINDS]


async def _render_page(request: web.Request, status: int = 200, **values: Any) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        catalog = await load_catalog_with_version(conn)
        rows = await audit.recent(conn)
    return _render(request, "catalog.html", status=status, audit=rows,
                   objects=_objects(catalog[1]), **values)


async def catalog_page(request: web.Request) -> web.Response:
    session = _session(request)
    async with request.app[POOL].acquire() as conn:
        version, catalog = await load_catalog_with_version(conn)
    return await _render_page(request, session=session, title="Catalog",
                              text=dump_catalog_yaml(catalog), version=version, preview=[],
                              saved="")


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
        return await _render_page(request, 422, **values)
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
        return await _render_page(request, 422, **values)
    except CatalogChanged as exc:
        values["error"] = str(exc)
        return await _render_page(request, 409, **values)
    return await _render_page(request, **values)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/catalog", catalog_page)
    app.router.add_get("/console/catalog.yaml", catalog_yaml)
    app.router.add_post("/console/catalog", catalog_post)
