"""Shared fixtures: a real PostgreSQL database and a real Asterisk, both started for the run."""

from tests.pg import db, pg_dsn, pg_pool  # noqa: F401
from tests.support.daemon import daemon, daemon_factory  # noqa: F401
from tests.support.fixtures import ari_cleanup, asterisk, test_caller  # noqa: F401
