"""The doctor's eyes: ask ARI and PostgreSQL what ``keypress_ari.doctor`` judges. Every
request is bounded in time; nothing here changes anything."""

from __future__ import annotations

import asyncio
import time
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import asyncpg

from keypress_ari.ari.auth import basic_auth_header
from keypress_ari.config import AriSettings, Settings, extra_servers
from keypress_ari.doctor import Check, Facts, checks
from keypress_ari.flows.errors import CatalogError
from keypress_ari.store import catalog as catalog_store
from keypress_ari.store.db import available_migrations
from keypress_ari.store.pg_store import PgStore

TIMEOUT = 5.0


async def _ari(facts: Facts, url: str, user: str, password: str) -> None:
    headers = {"Authorization": basic_auth_header(user, password)}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    try:
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
            async with session.get(f"{url}/asterisk/info") as resp:
                facts.ari_status = resp.status
                if resp.status != 200:
                    return
                info: dict[str, Any] = await resp.json()
                facts.asterisk_version = info.get("system", {}).get("version", "?")
                date = resp.headers.get("Date")
                if date:
                    facts.asterisk_skew = parsedate_to_datetime(date).timestamp() - time.time()
            async with session.get(f"{url}/asterisk/modules") as resp:
                if resp.status == 200:
                    facts.modules = {m["name"].removesuffix(".so") for m in await resp.json()
                                     if m.get("status", "Running") == "Running"}
            async with session.get(f"{url}/applications") as resp:
                if resp.status == 200:
                    facts.applications = {a["name"] for a in await resp.json()}
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        facts.ari_error = str(exc) or type(exc).__name__


async def _database(facts: Facts, dsn: str) -> None:
    facts.latest = max(m.number for m in available_migrations())
    try:
        pool = await asyncio.wait_for(asyncpg.create_pool(dsn, min_size=1, max_size=1), TIMEOUT)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        facts.db_error = str(exc) or type(exc).__name__
        return
    try:
        store = PgStore(pool)
        facts.schema = await store.schema_version()
        now = await store.clock()
        facts.db_skew = now - time.time()
        if facts.schema is not None and facts.schema == facts.latest:
            async with pool.acquire() as conn:
                try:
                    facts.catalog = await catalog_store.load_catalog(conn)
                except CatalogError as exc:
                    facts.catalog_error = str(exc)
    except (OSError, asyncpg.PostgresError) as exc:
        facts.db_error = str(exc)
    finally:
        await pool.close()


async def _dialplan(facts: Facts, settings: Settings) -> None:
    """The dialplan, read over AMI (``Command: dialplan show``) when an AMI secret is set:
    ARI cannot list it."""
    from keypress_ari.ami.client import AmiClient, AmiError

    m = settings.ami
    client = AmiClient(m.host, m.port, m.user, m.secret.get_secret_value(),
                       on_event=lambda message: None, action_timeout=TIMEOUT)
    task = asyncio.create_task(client.run())
    try:
        await client.wait_connected(TIMEOUT)
        reply = await client.action("Command", Command="dialplan show")
        facts.dialplan = reply.get("Output", "")
    except (AmiError, TimeoutError, OSError) as exc:
        facts.dialplan_error = str(exc) or type(exc).__name__
    finally:
        await client.stop()
        await asyncio.wait([task], timeout=TIMEOUT)


async def gather(settings: Settings) -> tuple[Facts, tuple[Facts, ...]]:
    """The facts of the first Asterisk server (with PostgreSQL's and the dialplan's), and
    those of every other ``[[asterisk]]`` server. A config error (two servers with one name
    or URL) is raised as ``ConfigError``, as ``run`` would."""
    extra = extra_servers(settings)
    ari: AriSettings | None = settings.ari
    first_name = "default"
    if ari is None and settings.asterisk:
        ari, first_name = settings.asterisk[0], settings.asterisk[0].name
    named = bool(extra)
    facts = Facts(ari_url=ari.url if ari else "(no [ari] section)",
                  app=ari.app if ari else "keypress", agi_enabled=settings.agi.enabled,
                  ami_enabled=settings.ami.enabled, server=first_name if named else "")
    work = [_database(facts, settings.database.dsn.get_secret_value())]
    if ari is not None:
        work.append(_ari(facts, ari.url, ari.user, ari.password.get_secret_value()))
    else:
        facts.ari_error = "no [ari] section (or KEYPRESS_ARI__USER/PASSWORD)"
    others = tuple(Facts(ari_url=e.url, app=e.app, agi_enabled=settings.agi.enabled,
                         ami_enabled=settings.ami.enabled, server=e.name) for e in extra)
    for entry, other in zip(extra, others, strict=True):
        work.append(_ari(other, entry.url, entry.user, entry.password.get_secret_value()))
    facts.handover_context = settings.ami.handover_context
    if settings.ami.secret.get_secret_value():
        work.append(_dialplan(facts, settings))
    await asyncio.gather(*work)
    for other in others:  # which modes the catalog uses decides some servers' checks
        other.catalog = facts.catalog
    return facts, others


async def examine(settings: Settings) -> list[Check]:
    """Gather the facts and judge them."""
    first, others = await gather(settings)
    return checks(first, others)
