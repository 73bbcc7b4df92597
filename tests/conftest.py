"""Shared fixtures: a real PostgreSQL database and a real Asterisk, both started for the run."""

import pytest

from keypress_ari.cli import loop_factory
from tests.pg import db, pg_dsn, pg_pool  # noqa: F401
from tests.support.browser import console  # noqa: F401
from tests.support.daemon import daemon, daemon_factory  # noqa: F401
from tests.support.fixtures import ari_cleanup, asterisk, test_caller  # noqa: F401
from tests.support.tcpproxy import pg_proxy  # noqa: F401


def pytest_asyncio_loop_factories(config: object, item: object) -> dict[str, object]:
    """Every test runs on the event loop the daemon runs on by default (uvloop)."""
    return {"uvloop": loop_factory("uvloop")}


_NEEDS = {"asterisk": "asterisk", "pg_dsn": "pg"}  # fixture -> marker


def pytest_collection_modifyitems(config: object, items: list[pytest.Item]) -> None:
    """A test that uses the real Asterisk or PostgreSQL (through any fixture chain) carries
    that marker, so ``make unit`` (``-m "not asterisk and not pg"``) never needs either."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        for fixture, marker in _NEEDS.items():
            if fixture in names:
                item.add_marker(getattr(pytest.mark, marker))
