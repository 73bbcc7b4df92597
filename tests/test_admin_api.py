"""The admin HTTP API against a real PostgreSQL, served on 127.0.0.1."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from keypress_ari.calllog.ops import CallEvent, CallOpened, CallUpdated
from keypress_ari.flows.yamlio import load_catalog_yaml
from keypress_ari.http import AdminServer, create_admin_app
from keypress_ari.metrics import DaemonMetrics
from keypress_ari.store.catalog import import_catalog, load_catalog
from keypress_ari.store.log_writer import CallLogWriter
from keypress_ari.store.pg_store import PgStore
from tests.test_metrics import parse

pytestmark = pytest.mark.pg
TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

SEED = """
flow_groups:
  - name: press-one
    flows:
      - name: ca
        key: "1"
        filters: [{token: caller_state, op: "==", value: CA}]
        continue_routing: true
      - name: nope
        key: "2"
        disposition: not_interested
  - name: spare
    flows: [{key: "5", disposition: five}]
routers:
  - {name: main, prompt: "sound:hello", flow_group: press-one, buyers: [acme]}
buyers:
  - {name: acme, endpoint: Local/a@b}
  - {name: lonely, endpoint: Local/l@b}
numbers:
  - {number: "18005550100", router: main}
"""


class Api:
    def __init__(self, client: TestClient[Any, Any], ready: dict[str, Any],
                 metrics: DaemonMetrics, app: web.Application) -> None:
        self.client, self.ready, self.metrics, self.app = client, ready, metrics, app

    async def call(self, method: str, path: str, body: Any = None, *,
                   raw: str | None = None, headers: dict[str, str] | None = None
                   ) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": AUTH if headers is None else headers}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with self.client.request(method, path, **kwargs) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()


@pytest.fixture
async def api(db: asyncpg.Pool) -> AsyncIterator[Api]:
    async with db.acquire() as conn:
        await import_catalog(conn, load_catalog_yaml(SEED, "seed"))
    ready: dict[str, Any] = {"ready": True, "ari": True, "database": True}

    async def check() -> dict[str, Any]:
        return dict(ready)

    metrics = DaemonMetrics(calls_active=lambda: 2)
    app = create_admin_app(pool=db, token=TOKEN, ready=check, metrics=metrics)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Api(client, ready, metrics, app)


async def test_token_is_required_except_for_probes(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        status, body = await api.call("GET", "/flow-groups", headers=headers)
        assert status == 401 and "bearer" in body["error"]
    async with api.client.get("/routers") as resp:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await api.call("GET", "/healthz", headers={}))[0] == 200
    assert (await api.call("GET", "/readyz", headers={}))[0] == 200
    assert (await api.call("GET", "/flow-groups"))[0] == 200


async def test_readyz_is_503_when_not_ready(api: Api) -> None:
    api.ready.update(ready=False, ari=False)
    status, body = await api.call("GET", "/readyz", headers={})
    assert status == 503 and body["ari"] is False


async def test_flow_group_crud(api: Api) -> None:
    status, groups = await api.call("GET", "/flow-groups")
    assert status == 200 and [g["name"] for g in groups] == ["press-one", "spare"]
    status, group = await api.call("GET", "/flow-groups/press-one")
    assert status == 200 and group["flows"][0]["name"] == "ca"
    assert (await api.call("GET", "/flow-groups/nope"))[0] == 404

    new = {"flows": [{"key": "3", "disposition": "three"}], "max_attempts": 4}
    status, body = await api.call("PUT", "/flow-groups/extra", new)
    assert status == 201 and body["created"] and body["item"]["name"] == "extra"
    status, body = await api.call("PUT", "/flow-groups/extra", {**new, "max_attempts": 5})
    assert status == 200 and not body["created"]
    status, group = await api.call("GET", "/flow-groups/extra")
    assert group["max_attempts"] == 5

    bad = {"flows": [{"key": "1", "continue_routing": True, "disposition": "x"}]}
    status, err = await api.call("PUT", "/flow-groups/extra", bad)
    assert status == 422
    assert err["path"] == "flows[0]" and "mutually exclusive" in err["error"]
    assert err["error"].startswith("request body: flows[0]: ")
    status, err = await api.call("PUT", "/flow-groups/extra", {"flows": [], "colour": "red"})
    assert status == 422 and err["path"] == "colour" and "unknown field" in err["error"]
    status, err = await api.call("PUT", "/flow-groups/extra", {"name": "other", "flows": []})
    assert status == 422 and err["path"] == "name"

    status, body = await api.call("DELETE", "/flow-groups/extra")
    assert status == 200 and body["deleted"] == "extra"
    assert (await api.call("DELETE", "/flow-groups/extra"))[0] == 404


async def test_router_buyer_number_crud(api: Api) -> None:
    status, err = await api.call("PUT", "/routers/side", {"flow_group": "missing"})
    assert status == 422
    assert err["error"] == "request body: flow_group: unknown flow group 'missing'"
    assert err["path"] == "flow_group"
    status, _ = await api.call("PUT", "/routers/side", {"flow_group": "spare", "buyers": ["acme"]})
    assert status == 201
    assert (await api.call("GET", "/routers/side"))[1]["buyers"] == ["acme"]
    assert [r["name"] for r in (await api.call("GET", "/routers"))[1]] == ["main", "side"]

    status, err = await api.call("PUT", "/buyers/b2", {"endpoint": "no slash"})
    assert status == 422 and err["path"] == "endpoint"
    status, _ = await api.call("PUT", "/buyers/b2", {"endpoint": "SIP/b2", "ring_timeout": 9})
    assert status == 201
    assert (await api.call("GET", "/buyers/b2"))[1]["ring_timeout"] == 9

    status, err = await api.call("PUT", "/numbers/18005550199", {"router": "ghost"})
    assert status == 422 and err["error"] == "request body: router: unknown router 'ghost'"
    status, err = await api.call("PUT", "/numbers/18005550199",
                                 {"router": "side", "keypress_controls": True})
    assert status == 422 and "keypress_controls needs a flow_group" in err["error"]
    status, body = await api.call("PUT", "/numbers/18005550199",
                                  {"number": "18005550199", "router": "side"})
    assert status == 201 and body["item"]["router"] == "side"
    assert (await api.call("GET", "/numbers/18005550199"))[0] == 200

    assert (await api.call("DELETE", "/numbers/18005550199"))[0] == 200
    assert (await api.call("DELETE", "/routers/side"))[0] == 200
    assert (await api.call("DELETE", "/buyers/b2"))[0] == 200
    assert (await api.call("GET", "/numbers/18005550199"))[0] == 404


async def test_delete_refused_while_referenced(api: Api, db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        before = await conn.fetchval("SELECT version FROM catalog_state")
    status, err = await api.call("DELETE", "/flow-groups/press-one")
    assert status == 409 and err["error"] == "flow group 'press-one' is used by router 'main'"
    status, err = await api.call("DELETE", "/routers/main")
    assert status == 409 and "number '18005550100'" in err["error"]
    status, err = await api.call("DELETE", "/buyers/acme")
    assert status == 409 and err["error"] == "buyer 'acme' is used by router 'main'"
    status, body = await api.call("DELETE", "/buyers/lonely")
    assert status == 200 and body["version"] == before + 1
    async with db.acquire() as conn:
        catalog = await load_catalog(conn)
    assert catalog.flow_group("press-one") is not None and catalog.buyer("lonely") is None


async def test_writes_notify_the_catalog_channel(api: Api, db: asyncpg.Pool) -> None:
    got: asyncio.Queue[str] = asyncio.Queue()

    def heard(*args: Any) -> None:
        got.put_nowait(args[3])

    async with db.acquire() as conn:
        await conn.add_listener("keypress_catalog", heard)
        try:
            await api.call("PUT", "/flow-groups/n1", {"flows": []})
            first = await asyncio.wait_for(got.get(), 5)
            await api.call("DELETE", "/flow-groups/n1")
            second = await asyncio.wait_for(got.get(), 5)
        finally:
            await conn.remove_listener("keypress_catalog", heard)
    assert int(second) == int(first) + 1


async def test_flows_by_index(api: Api) -> None:
    base = "/flow-groups/press-one/flows"
    status, flows = await api.call("GET", base)
    assert status == 200 and [f["key"] for f in flows] == ["1", "2"]
    status, flow = await api.call("GET", base + "/1")
    assert status == 200 and flow["name"] == "nope"
    assert (await api.call("GET", base + "/2"))[0] == 404
    assert (await api.call("GET", base + "/x"))[0] == 404
    assert (await api.call("GET", "/flow-groups/ghost/flows"))[0] == 404

    status, body = await api.call("POST", base, {"key": "1", "extra_tokens": {"q": "all"}})
    assert status == 201 and body["index"] == 2 and body["label"] == "key 1 #2"
    status, err = await api.call("POST", base, {"key": "7"})
    assert status == 422 and err["path"] == "" and "a flow must set" in err["error"]
    status, err = await api.call("POST", base, {"key": "7", "disposition": "Bad Name"})
    assert status == 422 and err["path"] == "disposition"

    status, body = await api.call("PUT", base + "/1", {"key": "2", "disposition": "later"})
    assert status == 200 and body["item"]["disposition"] == "later"
    status, err = await api.call("PUT", base + "/1", {"key": "2", "disposition": 5})
    assert status == 422 and err["path"] == "disposition"
    assert (await api.call("PUT", base + "/9", {"key": "2", "disposition": "x"}))[0] == 404

    status, body = await api.call("DELETE", base + "/0")
    assert status == 200 and body["deleted"] == 0
    status, flows = await api.call("GET", base)
    assert [f.get("disposition") for f in flows] == ["later", None]


async def test_malformed_json_is_400(api: Api) -> None:
    status, err = await api.call("PUT", "/routers/x", raw="{not json")
    assert status == 400 and "malformed JSON" in err["error"]
    status, err = await api.call("PUT", "/routers/x", raw="[1, 2]")
    assert status == 422 and "JSON object" in err["error"]
    status, err = await api.call("POST", "/simulate", raw="")
    assert status == 400 and "empty body" in err["error"]


async def test_blocklist_round_trip(api: Api, db: asyncpg.Pool) -> None:
    got: asyncio.Queue[str] = asyncio.Queue()

    def heard(*args: Any) -> None:
        got.put_nowait(args[3])

    async with db.acquire() as conn:
        await conn.add_listener("keypress_blocklist", heard)
        status, row = await api.call("PUT", "/blocklist/+15551234", {"reason": "spam"})
        assert status == 201 and row["reason"] == "spam"
        assert await asyncio.wait_for(got.get(), 5) == "+15551234"
        status, _ = await api.call("PUT", "/blocklist/+15551234", {"reason": "still spam"})
        assert status == 200
        status, rows = await api.call("GET", "/blocklist")
        assert [(r["caller_number"], r["reason"]) for r in rows] == [("+15551234", "still spam")]
        status, err = await api.call("PUT", "/blocklist/+1555", {"why": "x"})
        assert status == 422 and err["path"] == "why"
        assert (await api.call("DELETE", "/blocklist/+15551234"))[0] == 200
        assert (await api.call("DELETE", "/blocklist/+15551234"))[0] == 404
        assert (await api.call("GET", "/blocklist"))[1] == []
        await conn.remove_listener("keypress_blocklist", heard)


async def _seed_calls(db: asyncpg.Pool) -> list[str]:
    writer = CallLogWriter(PgStore(db))
    start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    ids = []
    for i in range(7):
        call_id = str(uuid.uuid4())
        ids.append(call_id)
        at = start + timedelta(minutes=i)
        number = "18005550100" if i % 2 == 0 else "18005550101"
        writer.emit(CallOpened(call_id, number, f"555000{i}", "main", f"ch-{i}", "entering", at))
        writer.emit(CallEvent(call_id, 1, at, "caller", "key_press", "2", "press-one/nope",
                              {"matched": True}))
        writer.emit(CallUpdated(call_id, "ended", {}, {"caller": f"ch-{i}"},
                                "sale" if i < 3 else "not_interested", {},
                                ended_at=at + timedelta(seconds=30), ended_by="caller"))
    task = asyncio.create_task(writer.run())
    assert await writer.flush(10)
    writer.close()
    await task
    return ids


async def test_calls_filters_and_pagination(api: Api, db: asyncpg.Pool) -> None:
    ids = await _seed_calls(db)
    seen: list[str] = []
    cursor = None
    while True:
        query = "/calls?limit=3" + (f"&cursor={cursor}" if cursor else "")
        status, page = await api.call("GET", query)
        assert status == 200
        seen.extend(c["id"] for c in page["calls"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    status, page = await api.call("GET", "/calls?disposition=sale&number=18005550100")
    assert [c["id"] for c in page["calls"]] == [ids[2], ids[0]]
    status, page = await api.call(
        "GET", "/calls?since=2024-05-01T12:02:00Z&until=2024-05-01T12:04:00%2B00:00")
    assert [c["id"] for c in page["calls"]] == [ids[3], ids[2]]
    for bad in ("since=yesterday", "limit=0", "cursor=zzz", "colour=red"):
        status, err = await api.call("GET", f"/calls?{bad}")
        assert status == 400, bad
        assert bad.split("=")[0] in err["error"]


async def test_one_call_with_its_events(api: Api, db: asyncpg.Pool) -> None:
    ids = await _seed_calls(db)
    status, body = await api.call("GET", f"/calls/{ids[1]}")
    assert status == 200 and body["call"]["id"] == ids[1]
    assert body["call"]["disposition"] == "sale"
    [ev] = body["events"]
    assert ev["kind"] == "key_press" and ev["flow"] == "press-one/nope" and ev["digit"] == "2"
    assert (await api.call("GET", f"/calls/{uuid.uuid4()}"))[0] == 404
    assert (await api.call("GET", "/calls/not-a-uuid"))[0] == 404


async def test_simulate_explains_a_filter_miss_and_touches_nothing(api: Api,
                                                                  db: asyncpg.Pool) -> None:
    async with db.acquire() as conn:
        before = await conn.fetchval("SELECT version FROM catalog_state")
    status, body = await api.call("POST", "/simulate", {
        "number": "18005550100", "digit": 1, "tokens": {"caller_state": "NY"}})
    assert status == 200 and body["outcome"] == "no_match"
    [miss] = body["misses"]
    assert miss["flow"] == "press-one/ca"
    assert miss["why"] == "caller_state is 'NY', wanted == 'CA'"
    status, body = await api.call("POST", "/simulate", {"number": "18005550100", "digit": "2"})
    assert body["matched"] == "press-one/nope"
    assert body["would_run"]["disposition"] == "not_interested"
    status, body = await api.call("POST", "/simulate", {"number": "18005550100", "digit": "2",
                                                        "mode": "ami"})
    assert status == 200 and body["mode"] == "ami" and body["outcome"] == "no_flows"
    assert body["stage"] == "live"  # only the stasis mode has a router prompt
    status, err = await api.call("POST", "/simulate", {"number": "1", "digit": "1",
                                                       "leg": "agent"})
    assert status == 422 and err["path"] == "leg"
    status, err = await api.call("POST", "/simulate", {"number": "1", "digit": "1",
                                                       "mode": "sip"})
    assert status == 422 and err["path"] == "mode"
    async with db.acquire() as conn:
        assert await conn.fetchval("SELECT version FROM catalog_state") == before
        assert await conn.fetchval("SELECT count(*) FROM calls") == 0


async def test_openapi_lists_every_route(api: Api) -> None:
    status, doc = await api.call("GET", "/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    served = set()
    for route in api.app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        served.add((route.method.lower(), path))
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops if m != "parameters"}
    assert served == documented
    assert {"FlowGroup", "Flow", "Router", "Buyer", "Number", "Filter"} <= set(
        doc["components"]["schemas"])


async def test_metrics_parse(api: Api) -> None:
    api.metrics.observe_dtmf_to_ari(0.002)
    async with api.client.get("/metrics", headers=AUTH) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        types, samples = parse(await resp.text())
    assert types["keypress_key_presses_total"] == "counter"
    assert samples[("keypress_calls_active", ())] == 2
    assert samples[("keypress_dtmf_to_ari_seconds_count", ())] == 1
    assert (await api.call("GET", "/metrics", headers={}))[0] == 401


async def test_admin_server_binds_loopback(db: asyncpg.Pool) -> None:
    async def check() -> dict[str, Any]:
        return {"ready": True}

    app = create_admin_app(pool=db, token=TOKEN, ready=check, metrics=DaemonMetrics())
    server = AdminServer(app, port=0)
    await server.start()
    try:
        assert server.port != 0 and server.url.startswith("http://127.0.0.1:")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        reply = await reader.read()
        writer.close()
        assert reply.startswith(b"HTTP/1.1 200")
    finally:
        await server.stop()
    with pytest.raises(ValueError):
        create_admin_app(pool=db, token="", ready=check, metrics=DaemonMetrics())
