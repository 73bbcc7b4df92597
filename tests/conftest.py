"""Shared fixtures: a real PostgreSQL database and a real Asterisk, both started for the run."""

from keypress_ari.cli import loop_factory
from tests.pg import db, pg_dsn, pg_pool  # noqa: F401
from tests.support.daemon import daemon, daemon_factory  # noqa: F401
from tests.support.fixtures import ari_cleanup, asterisk, test_caller  # noqa: F401


def pytest_asyncio_loop_factories(config: object, item: object) -> dict[str, object]:
    """Every test runs on the event loop the daemon runs on by default (uvloop)."""
    return {"uvloop": loop_factory("uvloop")}
