"""Errors raised while loading, validating or importing a flow catalog.

``CatalogError`` is what callers see: ``str(err)`` is one line per problem, each shaped like
``flows.yaml: flow_groups[0] (press-one).flows[1]: continue_routing and disposition are
mutually exclusive``. ``CatalogProblem`` is raised *inside* model validators for whole-catalog
checks (unique names, references); it carries the location so that callers which translate
pydantic errors can recover the path instead of reporting it at the top level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

Loc = tuple[str | int, ...]


class CatalogError(Exception):
    """A catalog could not be loaded or imported.

    ``source`` names where it came from (a file name, ``"import"``, ...), ``path`` is the
    location inside it (``""`` for the document itself or a YAML syntax error whose position
    is in the message) and ``message`` says what is wrong. ``others`` holds further problems
    found in the same pass, as ``(path, message)`` pairs.
    """

    def __init__(
        self,
        source: str,
        path: str,
        message: str,
        others: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.source = source
        self.path = path
        self.message = message
        self.others: tuple[tuple[str, str], ...] = tuple(others)
        super().__init__(str(self))

    @staticmethod
    def _line(source: str, path: str, message: str) -> str:
        return f"{source}: {path}: {message}" if path else f"{source}: {message}"

    def __str__(self) -> str:
        lines = [self._line(self.source, self.path, self.message)]
        lines.extend(self._line(self.source, p, m) for p, m in self.others)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"CatalogError({self.source!r}, {self.path!r}, {self.message!r})"


class CatalogProblem(ValueError):
    """A whole-catalog validation failure at ``loc`` (pydantic-style location tuple).

    ``path`` is the human form of ``loc`` (with object names), ``message`` the bare reason;
    ``str()`` joins them so the error also reads well when pydantic reports it at the top.
    """

    def __init__(self, loc: Loc, path: str, message: str) -> None:
        self.loc = loc
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


def _name_of(node: Any) -> str | None:
    """The display name of a list element: a mapping's or model's ``name`` / ``number``."""
    for attr in ("name", "number"):
        value = node.get(attr) if isinstance(node, Mapping) else getattr(node, attr, None)
        if isinstance(value, str | int) and not isinstance(value, bool):
            return str(value)
    return None


def _child(node: Any, part: str | int) -> Any:
    if isinstance(part, int):
        if isinstance(node, Sequence) and not isinstance(node, str) and 0 <= part < len(node):
            return node[part]
        return None
    if isinstance(node, Mapping):
        return node.get(part)
    return getattr(node, part, None)


def format_loc(loc: Loc, root: Any = None) -> str:
    """Render ``("routers", 0, "flow_group")`` as ``routers[0] (main).flow_group``.

    ``root`` is the document the location points into (raw YAML data or models); when the
    element at a list index has a name, it is shown in parentheses. Pydantic's internal
    segments such as ``[key]`` (dict-key validation) are dropped.
    """
    out: list[str] = []
    node = root
    for part in loc:
        if isinstance(part, int):
            out.append(f"[{part}]")
            node = _child(node, part)
            name = _name_of(node) if node is not None else None
            if name is not None:
                out.append(f" ({name})")
        elif part.startswith("[") and part.endswith("]"):
            continue
        else:
            out.append(f".{part}" if out else part)
            node = _child(node, part)
    return "".join(out)
