"""The catalog in PostgreSQL (schema: ``migrations/001_catalog.sql``).

``import_catalog`` upserts what a catalog file holds, in one transaction, and leaves anything
the file does not mention alone; ``load_catalog`` reads everything back as a validated
``Catalog``. The SQL lives in this module as constants. Every statement is parameterised;
JSON columns are sent and read as text (``$n::text::jsonb`` / ``col::text``) and
``press_1_timeout`` as ``float8``, so the result does not depend on type codecs the caller may
have registered on the connection.

Order: rows are read back in id order (creation order), so importing a file into an empty
database and loading it gives back an equal catalog.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from pydantic import ValidationError

from keypress_ari.flows.errors import CatalogError
from keypress_ari.flows.model import Catalog, Flow
from keypress_ari.flows.yamlio import catalog_from_data, validation_error

NOTIFY_CHANNEL = "keypress_catalog"
IMPORT_LOCK_ID = 0x6B657963  # "keyc": serialises imports (transaction-scoped advisory lock)

_SELECT_GROUPS = """
SELECT id, name, redirect_no_key_press, max_attempts, pass_through_digits, modes
FROM flow_groups ORDER BY id"""
_SELECT_FLOWS = """
SELECT flow_group_id, name, key, filters::text AS filters, extra_tokens::text AS extra_tokens,
       disposition, call_control_actions::text AS call_control_actions, continue_routing,
       buyer_conference_time_limit, actions::text AS actions
FROM flows ORDER BY flow_group_id, position"""
_SELECT_ROUTERS = """
SELECT r.id, r.name, r.request_key_press, r.prompt, r.press_1_timeout::float8 AS press_1_timeout,
       r.no_buyer_prompt, g.name AS flow_group
FROM routers r LEFT JOIN flow_groups g ON g.id = r.flow_group_id ORDER BY r.id"""
_SELECT_ROUTER_BUYERS = """
SELECT rb.router_id, b.name FROM router_buyers rb JOIN buyers b ON b.id = rb.buyer_id
ORDER BY rb.router_id, rb.position"""
_SELECT_BUYERS = """
SELECT b.name, b.endpoint, b.ring_timeout, b.enabled, b.max_concurrency,
       b.forwards_to_external_agent, g.name AS flow_group
FROM buyers b LEFT JOIN flow_groups g ON g.id = b.flow_group_id ORDER BY b.id"""
_SELECT_NUMBERS = """
SELECT n.number, r.name AS router, n.keypress_controls, g.name AS flow_group
FROM numbers n JOIN routers r ON r.id = n.router_id
LEFT JOIN flow_groups g ON g.id = n.flow_group_id ORDER BY n.id"""

_GROUP_ID = "(SELECT id FROM flow_groups WHERE name = {})"
_UPSERT_GROUP = """
INSERT INTO flow_groups (name, redirect_no_key_press, max_attempts, pass_through_digits, modes)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (name) DO UPDATE SET
    redirect_no_key_press = EXCLUDED.redirect_no_key_press,
    max_attempts = EXCLUDED.max_attempts,
    pass_through_digits = EXCLUDED.pass_through_digits,
    modes = EXCLUDED.modes,
    updated_at = now()
RETURNING id"""
_DELETE_FLOWS = "DELETE FROM flows WHERE flow_group_id = $1"
_INSERT_FLOW = """
INSERT INTO flows (flow_group_id, position, name, key, filters, extra_tokens, disposition,
                   call_control_actions, continue_routing, buyer_conference_time_limit, actions)
VALUES ($1, $2, $3, $4, $5::text::jsonb, $6::text::jsonb, $7, $8::text::jsonb, $9, $10,
        $11::text::jsonb)"""
_UPSERT_BUYER = f"""
INSERT INTO buyers (name, endpoint, ring_timeout, enabled, max_concurrency,
                    forwards_to_external_agent, flow_group_id)
VALUES ($1, $2, $3, $4, $5, $6, {_GROUP_ID.format("$7")})
ON CONFLICT (name) DO UPDATE SET
    endpoint = EXCLUDED.endpoint,
    ring_timeout = EXCLUDED.ring_timeout,
    enabled = EXCLUDED.enabled,
    max_concurrency = EXCLUDED.max_concurrency,
    forwards_to_external_agent = EXCLUDED.forwards_to_external_agent,
    flow_group_id = EXCLUDED.flow_group_id,
    updated_at = now()"""
_UPSERT_ROUTER = f"""
INSERT INTO routers (name, request_key_press, prompt, press_1_timeout, flow_group_id,
                     no_buyer_prompt)
VALUES ($1, $2, $3, $4::text::numeric, {_GROUP_ID.format("$5")}, $6)
ON CONFLICT (name) DO UPDATE SET
    request_key_press = EXCLUDED.request_key_press,
    prompt = EXCLUDED.prompt,
    press_1_timeout = EXCLUDED.press_1_timeout,
    no_buyer_prompt = EXCLUDED.no_buyer_prompt,
    flow_group_id = EXCLUDED.flow_group_id,
    updated_at = now()
RETURNING id"""
_DELETE_ROUTER_BUYERS = "DELETE FROM router_buyers WHERE router_id = $1"
_INSERT_ROUTER_BUYER = """
INSERT INTO router_buyers (router_id, buyer_id, position)
SELECT $1, id, $3 FROM buyers WHERE name = $2"""
_UPSERT_NUMBER = f"""
INSERT INTO numbers (number, router_id, keypress_controls, flow_group_id)
VALUES ($1, (SELECT id FROM routers WHERE name = $2), $3, {_GROUP_ID.format("$4")})
ON CONFLICT (number) DO UPDATE SET
    router_id = EXCLUDED.router_id,
    keypress_controls = EXCLUDED.keypress_controls,
    flow_group_id = EXCLUDED.flow_group_id,
    updated_at = now()"""
_BUMP_VERSION = """
INSERT INTO catalog_state (id, version, updated_at) VALUES (true, 1, now())
ON CONFLICT (id) DO UPDATE SET version = catalog_state.version + 1, updated_at = now()
RETURNING version"""
_SELECT_VERSION = "SELECT version FROM catalog_state WHERE id"


@dataclass(frozen=True, slots=True)
class KindCounts:
    created: int = 0
    updated: int = 0  # includes rows rewritten with identical values


@dataclass(frozen=True, slots=True)
class ImportSummary:
    flow_groups: KindCounts = field(default_factory=KindCounts)
    routers: KindCounts = field(default_factory=KindCounts)
    buyers: KindCounts = field(default_factory=KindCounts)
    numbers: KindCounts = field(default_factory=KindCounts)
    flows_written: int = 0
    version: int = 0

    def __str__(self) -> str:
        parts = [
            f"{kind}: {c.created} created, {c.updated} updated"
            for kind, c in (
                ("flow groups", self.flow_groups),
                ("routers", self.routers),
                ("buyers", self.buyers),
                ("numbers", self.numbers),
            )
        ]
        return "; ".join(parts) + f"; {self.flows_written} flows; catalog version {self.version}"


def _counts(incoming: Catalog, stored: Catalog, kind: str, key: str) -> KindCounts:
    existing = {getattr(x, key) for x in getattr(stored, kind)}
    names = [getattr(x, key) for x in getattr(incoming, kind)]
    updated = sum(1 for n in names if n in existing)
    return KindCounts(created=len(names) - updated, updated=updated)


async def catalog_version(conn: asyncpg.Connection) -> int:
    """The current catalog version (0 before the first import)."""
    version = await conn.fetchval(_SELECT_VERSION)
    return int(version) if version is not None else 0


async def _read(conn: asyncpg.Connection) -> Catalog:
    flows: dict[int, list[dict[str, Any]]] = {}
    for row in await conn.fetch(_SELECT_FLOWS):
        flow = {k: row[k] for k in ("name", "key", "disposition", "continue_routing")}
        flow["buyer_conference_time_limit"] = row["buyer_conference_time_limit"]
        for column in ("filters", "extra_tokens", "call_control_actions", "actions"):
            flow[column] = json.loads(row[column])
        flows.setdefault(row["flow_group_id"], []).append(flow)
    groups = [
        {**{k: v for k, v in row.items() if k != "id"}, "flows": flows.get(row["id"], [])}
        for row in await conn.fetch(_SELECT_GROUPS)
    ]
    buyers_of: dict[int, list[str]] = {}
    for row in await conn.fetch(_SELECT_ROUTER_BUYERS):
        buyers_of.setdefault(row["router_id"], []).append(row["name"])
    routers = [
        {**{k: v for k, v in row.items() if k != "id"}, "buyers": buyers_of.get(row["id"], [])}
        for row in await conn.fetch(_SELECT_ROUTERS)
    ]
    data = {
        "flow_groups": groups,
        "routers": routers,
        "buyers": [dict(row) for row in await conn.fetch(_SELECT_BUYERS)],
        "numbers": [dict(row) for row in await conn.fetch(_SELECT_NUMBERS)],
    }
    return catalog_from_data(data, "database")


async def load_catalog_with_version(conn: asyncpg.Connection) -> tuple[int, Catalog]:
    """The stored catalog and its version, read from one snapshot."""
    if conn.is_in_transaction():
        return await catalog_version(conn), await _read(conn)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await catalog_version(conn), await _read(conn)


async def load_catalog(conn: asyncpg.Connection) -> Catalog:
    """Everything stored, as a validated ``Catalog`` (raises ``CatalogError`` if it is not)."""
    return (await load_catalog_with_version(conn))[1]


def _merge(stored: Catalog, incoming: Catalog, source: str) -> Catalog:
    """``incoming`` first (so error paths use its indexes), then stored objects it does not
    replace; validated as a whole catalog."""
    parts: dict[str, tuple[Any, ...]] = {}
    for kind, key in (("flow_groups", "name"), ("routers", "name"), ("buyers", "name")):
        new = getattr(incoming, kind)
        names = {getattr(x, key) for x in new}
        parts[kind] = (*new, *(x for x in getattr(stored, kind) if getattr(x, key) not in names))
    numbers = {n.number for n in incoming.numbers}
    parts["numbers"] = (*incoming.numbers, *(n for n in stored.numbers if n.number not in numbers))
    try:
        return Catalog(**parts)
    except ValidationError as exc:
        raise validation_error(source, exc, parts) from None


async def _write_flows(conn: asyncpg.Connection, group_id: int, flows: Sequence[Flow]) -> None:
    await conn.execute(_DELETE_FLOWS, group_id)
    rows = []
    for position, flow in enumerate(flows):
        dumped = flow.model_dump(
            mode="json", include={"filters", "call_control_actions", "actions"}
        )
        filters = [{k: v for k, v in f.items() if v is not None} for f in dumped["filters"]]
        rows.append(
            (
                group_id,
                position,
                flow.name,
                flow.key,
                json.dumps(filters),
                json.dumps(flow.extra_tokens),
                flow.disposition,
                json.dumps(dumped["call_control_actions"]),
                flow.continue_routing,
                flow.buyer_conference_time_limit,
                json.dumps(dumped["actions"]),
            )
        )
    if rows:
        await conn.executemany(_INSERT_FLOW, rows)


class CatalogChanged(Exception):
    """The catalog changed since the version an editor opened (optimistic concurrency)."""

    def __init__(self, opened: int, now: int) -> None:
        super().__init__(f"the catalog changed since you opened it (version {opened}, now "
                         f"{now}): reload, look at the change, and apply yours again")
        self.opened, self.now = opened, now


class ObjectChanged(Exception):
    """One object changed (or appeared, or went) since an editor opened it."""

    def __init__(self, kind: str, name: str, *, created: bool) -> None:
        label = kind.rstrip("s").replace("_", " ")
        what = "was created by someone else" if created else "changed since you opened it"
        super().__init__(f"{label} {name} {what}: reload it, look at the change, and apply "
                         f"yours again (nothing was saved)")
        self.kind, self.name = kind, name


# Which attribute names an object of each kind, for fingerprints and expectations.
KEY_OF = {"flow_groups": "name", "routers": "name", "buyers": "name", "numbers": "number"}


def fingerprint(item: Any) -> str:
    """A short digest of one catalog object's content: an editor's "as I opened it"."""
    text = json.dumps(item.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def stored_fingerprint(stored: Catalog, kind: str, name: str) -> str | None:
    """The fingerprint of ``kind``/``name`` in ``stored``; ``None`` when there is none."""
    for item in getattr(stored, kind):
        if getattr(item, KEY_OF[kind]) == name:
            return fingerprint(item)
    return None


def _check_expected(stored: Catalog, expected: Mapping[tuple[str, str], str | None]) -> None:
    for (kind, name), opened in expected.items():
        now = stored_fingerprint(stored, kind, name)
        if now != opened:
            raise ObjectChanged(kind, name, created=opened is None)


def check_import(stored: Catalog, incoming: Catalog, source: str) -> None:
    """Raise ``CatalogError`` if importing ``incoming`` over ``stored`` would give an invalid
    catalog (what :func:`import_catalog` checks before writing; a preview's check)."""
    _merge(stored, incoming, source)


async def import_catalog(
    conn: asyncpg.Connection, catalog: Catalog, *, source: str = "import",
    expected_version: int | None = None,
    expected: Mapping[tuple[str, str], str | None] | None = None,
) -> ImportSummary:
    """Upsert ``catalog`` (full or ``Catalog.partial``) into the database in one transaction.

    Flow groups, routers, buyers and numbers are matched by name / number. An imported group's
    flows and an imported router's buyer list are replaced wholesale; objects the catalog does
    not mention are left as they are. The merged result must be a valid catalog (e.g. a number
    may name a router that is only in the database); if it is not, ``CatalogError`` (with
    ``source`` and the path in ``catalog``) is raised and nothing is written. Then the catalog
    version is bumped and ``NOTIFY keypress_catalog, '<version>'`` is sent (on commit).
    ``expected_version``: refuse (:class:`CatalogChanged`, nothing written) unless the
    catalog is still at that version (an editor's save of the whole catalog).
    ``expected``: ``{(kind, name): fingerprint}`` of the objects an editor opened (``None``:
    it did not exist); refuse (:class:`ObjectChanged`, nothing written) if any differs now.
    Checked under the import lock, so two concurrent saves of one object cannot both pass.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", IMPORT_LOCK_ID)
        if expected_version is not None:
            now = await catalog_version(conn)
            if now != expected_version:
                raise CatalogChanged(expected_version, now)
        stored = await _read(conn)
        if expected:
            _check_expected(stored, expected)
        _merge(stored, catalog, source)
        flows_written = 0
        for group in catalog.flow_groups:
            group_id = await conn.fetchval(
                _UPSERT_GROUP,
                group.name,
                group.redirect_no_key_press,
                group.max_attempts,
                group.pass_through_digits,
                list(group.modes),
            )
            await _write_flows(conn, group_id, group.flows)
            flows_written += len(group.flows)
        for b in catalog.buyers:
            await conn.execute(
                _UPSERT_BUYER,
                b.name,
                b.endpoint,
                b.ring_timeout,
                b.enabled,
                b.max_concurrency,
                b.forwards_to_external_agent,
                b.flow_group,
            )
        for r in catalog.routers:
            router_id = await conn.fetchval(
                _UPSERT_ROUTER,
                r.name,
                r.request_key_press,
                r.prompt,
                repr(float(r.press_1_timeout)),
                r.flow_group,
                r.no_buyer_prompt,
            )
            await conn.execute(_DELETE_ROUTER_BUYERS, router_id)
            if r.buyers:
                await conn.executemany(
                    _INSERT_ROUTER_BUYER, [(router_id, b, i) for i, b in enumerate(r.buyers)]
                )
        for n in catalog.numbers:
            await conn.execute(
                _UPSERT_NUMBER, n.number, n.router, n.keypress_controls, n.flow_group
            )
        version = int(await conn.fetchval(_BUMP_VERSION))
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(version))
    return ImportSummary(
        flow_groups=_counts(catalog, stored, "flow_groups", "name"),
        routers=_counts(catalog, stored, "routers", "name"),
        buyers=_counts(catalog, stored, "buyers", "name"),
        numbers=_counts(catalog, stored, "numbers", "number"),
        flows_written=flows_written,
        version=version,
    )


__all__ = [
    "NOTIFY_CHANNEL",
    "CatalogError",
    "ImportSummary",
    "KindCounts",
    "catalog_version",
    "import_catalog",
    "load_catalog",
    "load_catalog_with_version",
]
