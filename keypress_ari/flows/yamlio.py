"""Read and write the catalog as YAML (``examples/flows.yaml`` shows every field).

Top-level keys: ``flow_groups``, ``routers``, ``buyers``, ``numbers`` — all optional, anything
else is rejected. Every problem becomes a ``CatalogError`` whose lines read like
``flows.yaml: routers[0] (main).flow_group: unknown flow group 'x'`` or
``flows.yaml: line 7 column 3: malformed YAML: ...``. Duplicate mapping keys are rejected as
malformed YAML (PyYAML would silently keep the last one).

Dumping is deterministic (field declaration order, list order kept), omits fields at their
default, writes flow keys and numbers as double-quoted strings, and round-trips:
``load(dump(c)) == c``. Mappings whose order the database does not keep (extra tokens,
webhook headers and bodies) are written with sorted keys, so a catalog dumps the same
whether it was read from a file or from the database. Only the safe loader/dumper classes are used.
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from keypress_ari.flows.errors import CatalogError, CatalogProblem, Loc, format_loc
from keypress_ari.flows.model import Catalog

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable key: let the constructor report it
            continue
        if duplicate:
            raise yaml.MarkedYAMLError(
                problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
            )
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _Quoted(str):
    """A string always written in double quotes (flow keys, numbers)."""


class _Dumper(yaml.SafeDumper):
    pass


def _represent_quoted(dumper: yaml.SafeDumper, data: _Quoted) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(data), style='"')


_Dumper.add_representer(_Quoted, _represent_quoted)


def _yaml_error(source: str, exc: yaml.YAMLError) -> CatalogError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
    return CatalogError(source, "", f"{where}malformed YAML: {problem}")


def _message(err: ErrorDetails) -> tuple[Loc, str]:
    """The location and text of one pydantic error, unwrapping our own exceptions."""
    loc: Loc = tuple(err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, CatalogProblem):
        return loc + cause.loc, cause.message
    if isinstance(cause, Exception):
        return loc, str(cause)
    if err["type"] == "extra_forbidden":
        return loc, "unknown field"
    if err["type"] == "missing":
        return loc, "required field missing"
    return loc, err["msg"]


def validation_error(source: str, exc: ValidationError, root: Any) -> CatalogError:
    """A ``CatalogError`` listing every problem in ``exc``; ``root`` is the validated input
    (raw data or models), used to show object names in paths."""
    problems: list[tuple[str, str]] = []
    for err in exc.errors():
        loc, message = _message(err)
        line = (format_loc(loc, root), message)
        if line not in problems:
            problems.append(line)
    (path, message), *others = problems or [("", str(exc))]
    return CatalogError(source, path, message, others)


def catalog_from_data(data: Any, source: str, *, partial: bool = False) -> Catalog:
    """Validate already-parsed data (``None`` is the empty catalog) into a ``Catalog``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CatalogError(
            source, "", "the document must be a mapping (flow_groups, routers, buyers, numbers)"
        )
    try:
        return Catalog.model_validate(data, context={"partial": partial})
    except ValidationError as exc:
        raise validation_error(source, exc, data) from None


def load_catalog_yaml(text: str, source: str, *, partial: bool = False) -> Catalog:
    """Parse and validate a catalog. ``partial=True`` skips the reference check (for imports
    that complete what is already stored; the import validates the merged result)."""
    try:
        data = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc) from None
    return catalog_from_data(data, source, partial=partial)


def _sorted(value: Any) -> Any:
    """``value`` with the keys of every mapping in it sorted (lists keep their order)."""
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def dump_catalog_yaml(catalog: Catalog) -> str:
    """The catalog as YAML; ``load_catalog_yaml(dump_catalog_yaml(c), s) == c``."""
    data: dict[str, Any] = catalog.model_dump(mode="json", exclude_defaults=True)
    for group in data.get("flow_groups", ()):
        for flow in group["flows"]:
            flow["key"] = _Quoted(flow["key"])
            if "extra_tokens" in flow:  # sorted: the database does not keep the order
                flow["extra_tokens"] = dict(sorted(flow["extra_tokens"].items()))
            for action in flow.get("actions", ()):
                webhook = action["webhook"]
                for part in ("headers", "body"):
                    if part in webhook:
                        webhook[part] = _sorted(webhook[part])
    for number in data.get("numbers", ()):
        number["number"] = _Quoted(number["number"])
    if not data:
        return "{}\n"
    return yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1000,
    )
