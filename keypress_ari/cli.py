"""The ``keypress-ari`` command: run the daemon, migrate, import/export flows, show calls,
simulate a key press, manage the blocklist."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from keypress_ari import __version__, cli_admin
from keypress_ari.config import ConfigError, Settings, load_settings
from keypress_ari.flows.errors import CatalogError
from keypress_ari.flows.yamlio import dump_catalog_yaml, load_catalog_yaml
from keypress_ari.logs import configure_logging
from keypress_ari.store import catalog as catalog_store
from keypress_ari.store import log_queries as calls_store
from keypress_ari.store.db import SchemaTooNew, migrate


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="keypress-ari", description=__doc__)
    p.add_argument("--config", type=Path, default=None,
                   help="TOML settings file (default $KEYPRESS_CONFIG or "
                        "/etc/keypress-ari/keypress-ari.toml)")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run the daemon (the Stasis app)")
    doctor = sub.add_parser("doctor", help="check the configured Asterisk and PostgreSQL, "
                                           "one line per check with its fix (exit 1 on FAIL)")
    doctor.add_argument("--json", action="store_true", help="print JSON")
    db = sub.add_parser("db", help="database schema").add_subparsers(dest="action", required=True)
    db.add_parser("migrate", help="apply pending migrations (idempotent)")
    flows = sub.add_parser("flows", help="flow groups, flows, routers, buyers, numbers")
    fsub = flows.add_subparsers(dest="action", required=True)
    imp = fsub.add_parser("import", help="upsert a YAML file in one transaction")
    imp.add_argument("file", type=Path)
    fsub.add_parser("export", help="print everything as YAML")
    calls = sub.add_parser("calls", help="the call log").add_subparsers(dest="action",
                                                                        required=True)
    show = calls.add_parser("show", help="a call's timeline")
    show.add_argument("call_id")
    lst = calls.add_parser("list", help="recent calls")
    lst.add_argument("--number")
    lst.add_argument("--channel", help="a channel id of any leg of the call")
    lst.add_argument("--limit", type=int, default=20)
    cli_admin.add_list_filters(lst)
    cli_admin.add_parsers(sub)
    ast = sub.add_parser("asterisk", help="what to add to Asterisk").add_subparsers(
        dest="action", required=True)
    feats = ast.add_parser("features", help="features.conf applicationmap entries and the "
                                            "dialplan lines for the fastagi mode")
    feats.add_argument("--file", type=Path,
                       help="read the catalog from this YAML file instead of the database")
    feats.add_argument("--host", help="the FastAGI address Asterisk connects to "
                                      "(default [agi] host)")
    feats.add_argument("--port", type=int, help="default [agi] port")
    feats.add_argument("--moh", help="music on hold class the other party hears while the "
                                     "key's AGI runs (default: silence)")
    feats.add_argument("--any-leg", action="store_true",
                       help="one set of keys for both legs, inherited (FreePBX)")
    return p


async def _with_conn(settings: Settings, work: Callable[[Any], Awaitable[int]]) -> int:
    conn = await asyncpg.connect(settings.database.dsn.get_secret_value())
    try:
        return await work(conn)
    finally:
        await conn.close()


async def _migrate(conn: Any) -> int:
    applied = await migrate(conn)
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def _import(path: Path) -> Callable[[Any], Awaitable[int]]:
    """Validate the file first (no database needed for that), then import it."""
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise CatalogError(str(path), "", f"cannot read: {exc.strerror}") from None
    catalog = load_catalog_yaml(text, str(path), partial=True)

    async def work(conn: Any) -> int:
        summary = await catalog_store.import_catalog(conn, catalog, source=str(path))
        print(f"imported {path}: {summary}")
        return 0
    return work


async def _export(conn: Any) -> int:
    sys.stdout.write(dump_catalog_yaml(await catalog_store.load_catalog(conn)))
    return 0


def _show(call_id: str) -> Callable[[Any], Awaitable[int]]:
    async def work(conn: Any) -> int:
        call = await calls_store.get_call(conn, call_id)
        if call is None:
            print(f"no call {call_id}", file=sys.stderr)
            return 1
        print(calls_store.format_timeline(call, await calls_store.call_events(conn, call_id)))
        return 0
    return work


def _print_features(args: argparse.Namespace, settings: Settings, catalog: Any) -> int:
    from keypress_ari.features import render

    sys.stdout.write(render(catalog, host=args.host or settings.agi.host,
                            port=args.port or settings.agi.port, moh_class=args.moh,
                            any_leg=args.any_leg))
    return 0


def _features(args: argparse.Namespace, settings: Settings) -> Callable[[Any], Awaitable[int]]:
    async def work(conn: Any) -> int:
        return _print_features(args, settings, await catalog_store.load_catalog(conn))
    return work


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """The event loop the daemon runs on (``[runtime] event_loop``)."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        configure_logging(settings.log.level, settings.log.format)
        if args.command == "run":
            from keypress_ari.service import run_daemon

            with asyncio.Runner(loop_factory=loop_factory(settings.runtime.event_loop)) as runner:
                runner.run(run_daemon(settings))
            return 0
        if args.command == "doctor":
            from keypress_ari.doctor import failed, render
            from keypress_ari.doctor_probe import examine

            results = asyncio.run(examine(settings))
            print(render(results, as_json=args.json))
            return 1 if failed(results) else 0
        work: Callable[[Any], Awaitable[int]]
        if args.command == "asterisk" and args.file is not None:
            text = args.file.read_text("utf-8")
            return _print_features(args, settings, load_catalog_yaml(text, str(args.file)))
        if args.command == "asterisk":
            work = _features(args, settings)
        elif args.command == "db":
            work = _migrate
        elif args.command == "flows":
            work = _import(args.file) if args.action == "import" else _export
        elif args.command in cli_admin.COMMANDS:
            work = cli_admin.work(args)
        else:
            work = _show(args.call_id) if args.action == "show" else cli_admin.list_calls(args)
        return asyncio.run(_with_conn(settings, work))
    except (ConfigError, CatalogError) as exc:
        print(f"keypress-ari: {exc}", file=sys.stderr)
        return 2
    except SchemaTooNew as exc:
        print(f"keypress-ari: {exc}", file=sys.stderr)
        return 1
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"keypress-ari: database: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
