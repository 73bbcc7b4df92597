"""CLI commands that read or change what the admin API does, straight on the database:
``simulate``, ``blocklist add|remove|list`` and ``calls list`` with its filters."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from keypress_ari.simulate import INVALID, simulate
from keypress_ari.store import admin
from keypress_ari.store import log_queries as calls_store
from keypress_ari.store.catalog import load_catalog

Work = Callable[[Any], Awaitable[int]]
COMMANDS = frozenset({"simulate", "blocklist"})


def _time(raw: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {raw!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _token(raw: str) -> tuple[str, str]:
    name, sep, value = raw.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {raw!r}")
    return name, value


def add_parsers(sub: Any) -> None:
    """Add ``simulate`` and ``blocklist`` to the top-level subparsers."""
    sim = sub.add_parser("simulate", help="dry run of a key press: which flow, what would run")
    sim.add_argument("--number", required=True, help="the dialled (tracking) number")
    sim.add_argument("--digit", required=True, help="0-9, *, # or no_key_press")
    sim.add_argument("--leg", choices=("caller", "buyer"), default="caller")
    sim.add_argument("--buyer", help="the buyer on the call (needed for --leg buyer)")
    sim.add_argument("--token", type=_token, action="append", default=[], metavar="NAME=VALUE",
                     help="a call token (repeatable)")
    sim.add_argument("--buyer-seconds", type=float, help="seconds the buyer is in the conference")
    sim.add_argument("--stage", choices=("prompt", "live"),
                     help="router prompt or live call (inferred when omitted)")
    sim.add_argument("--mode", choices=("stasis", "fastagi", "ami"), default="stasis",
                     help="the call mode the press comes in by (default stasis)")
    sim.add_argument("--json", action="store_true", help="print JSON")
    block = sub.add_parser("blocklist", help="blocked callers")
    bsub = block.add_subparsers(dest="action", required=True)
    add = bsub.add_parser("add", help="block a caller number")
    add.add_argument("number")
    add.add_argument("--reason", default="")
    rm = bsub.add_parser("remove", help="unblock a caller number")
    rm.add_argument("number")
    bsub.add_parser("list", help="every blocked caller")


def add_list_filters(lst: argparse.ArgumentParser) -> None:
    lst.add_argument("--disposition")
    lst.add_argument("--since", type=_time, help="ISO 8601, inclusive")
    lst.add_argument("--until", type=_time, help="ISO 8601, exclusive")


def work(args: argparse.Namespace) -> Work:
    if args.command == "simulate":
        return _simulate(args)
    return {"add": _block_add, "remove": _block_remove, "list": _block_list}[args.action](args)


def _simulate(args: argparse.Namespace) -> Work:
    async def run(conn: Any) -> int:
        catalog = await load_catalog(conn)
        result = simulate(catalog, number=args.number, digit=args.digit, leg=args.leg,
                          buyer=args.buyer, tokens=dict(args.token),
                          buyer_seconds=args.buyer_seconds, stage=args.stage,
                          mode=args.mode)
        print(json.dumps(result.to_dict(), indent=2) if args.json else result.render())
        return 1 if result.outcome == INVALID else 0
    return run


def _block_add(args: argparse.Namespace) -> Work:
    async def run(conn: Any) -> int:
        row, created = await admin.add_blocked(conn, args.number, args.reason)
        print(f"{'blocked' if created else 'updated'} {row.caller_number}"
              + (f" ({row.reason})" if row.reason else ""))
        return 0
    return run


def _block_remove(args: argparse.Namespace) -> Work:
    async def run(conn: Any) -> int:
        if not await admin.remove_blocked(conn, args.number):
            print(f"{args.number} is not blocked", file=sys.stderr)
            return 1
        print(f"unblocked {args.number}")
        return 0
    return run


def _block_list(args: argparse.Namespace) -> Work:
    async def run(conn: Any) -> int:
        for b in await admin.list_blocked(conn):
            print(f"{b.caller_number:>16}  {b.created_at:%Y-%m-%d %H:%M:%S}  {b.reason or '-'}")
        return 0
    return run


def list_calls(args: argparse.Namespace) -> Work:
    """``calls list``: newest first, with the same filters as ``GET /calls``."""
    async def run(conn: Any) -> int:
        if args.channel:
            found = await calls_store.find_calls(conn, number=args.number,
                                                 channel_id=args.channel, limit=args.limit)
            rows = [c for c in found
                    if (args.disposition is None or c.disposition == args.disposition)
                    and (args.since is None or c.started_at >= args.since)
                    and (args.until is None or c.started_at < args.until)]
        else:
            rows, _ = await admin.list_calls(conn, number=args.number,
                                             disposition=args.disposition, since=args.since,
                                             until=args.until,
                                             limit=max(1, min(args.limit, 1000)))
        for c in rows:
            print(f"{c.id}  {c.started_at:%Y-%m-%d %H:%M:%S}  {c.number:>14}  "
                  f"{c.caller_number or '-':>12}  {c.stage:9}  {c.disposition or '-'}")
        return 0
    return run
