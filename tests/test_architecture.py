"""The package's shape, checked from its source: no import cycles, the pure modules reach no
I/O (not even through another module), no module much over 400 lines, no SQL outside
``store/``."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "keypress_ari"

# Decisions and data: plain functions over plain data, tested without Asterisk or PostgreSQL.
PURE = (
    "keypress_ari.flows",
    "keypress_ari.calllog",
    "keypress_ari.calls.rules",
    "keypress_ari.calls.press_gate",
    "keypress_ari.calls.state",
    "keypress_ari.calls.channel_ops",
    "keypress_ari.calls.controls",
    "keypress_ari.simulate",
    "keypress_ari.webhooks.render",
    "keypress_ari.webhooks.urls",
    "keypress_ari.ari.auth",
)
IO_LIBRARIES = {"aiohttp", "asyncpg", "socket", "subprocess", "ssl", "http", "urllib.request"}
IO_MODULES = ("keypress_ari.ari.client", "keypress_ari.ari.rest_pool", "keypress_ari.ari.stream",
              "keypress_ari.http", "keypress_ari.store.log_writer", "keypress_ari.store.pg_store",
              "keypress_ari.store.journal", "keypress_ari.webhooks.worker",
              "keypress_ari.daemon", "keypress_ari.core")
MAX_LINES = 420
SQL = re.compile(r"\b(SELECT\s+.+\s+FROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b",
                 re.IGNORECASE | re.DOTALL)


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """Modules imported at run time (``if TYPE_CHECKING:`` blocks left out)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:  # `from pkg import module` imports the module
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in known else node.module)
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.stmt):
                    visit(inner)
                elif isinstance(inner, list):
                    for handler in inner:
                        if isinstance(handler, ast.ExceptHandler):
                            visit(handler.body)

    visit(tree.body)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {i for i in imports_of(path, known) if i in known and i != name}
            for name, path in known.items()}


def test_no_import_cycles() -> None:
    g = graph()
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles: list[list[str]] = []

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                walk(nxt, stack)
        stack.pop()
        state[node] = 2

    for name in sorted(g):
        if name not in state:
            walk(name, [])
    assert cycles == []


def reach(start: str, g: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(g.get(node, ()))
    return seen


def test_pure_modules_reach_no_io() -> None:
    g = graph()
    known = modules()
    problems = []
    for name in sorted(known):
        if not name.startswith(PURE):
            continue
        for mod in reach(name, g):
            if mod.startswith(IO_MODULES):
                problems.append(f"{name} reaches {mod}")
            external = {i.split(".")[0] for i in imports_of(known[mod], known)}
            external |= {i for i in imports_of(known[mod], known) if i in IO_LIBRARIES}
            for lib in sorted(external & IO_LIBRARIES):
                problems.append(f"{name} reaches {lib} (through {mod})")
    assert problems == []


def test_no_module_is_much_over_400_lines() -> None:
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_sql_lives_in_store_only() -> None:
    found = [name for name, path in modules().items()
             if not name.startswith("keypress_ari.store") and SQL.search(path.read_text())]
    assert found == []
