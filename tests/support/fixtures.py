"""Pytest fixtures for tests that need the real Asterisk.

The main conftest does ``from tests.support.fixtures import *``. The Asterisk is started
once per session (loop scope session, see pyproject); failing to start it is an ERROR of
the tests that need it, never a skip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.asterisk import AsteriskServer
from tests.support.caller import PlacedCall, TestCaller

__all__ = ["PlacedCall", "ari_cleanup", "asterisk", "test_caller"]


@pytest.fixture(scope="session")
async def asterisk() -> AsyncIterator[AsteriskServer]:
    """One Asterisk for the whole session on the test ports (HTTP 18088, SIP 15060, ...)."""
    server = AsteriskServer.on_free_ports()
    await server.start()  # raises AsteriskStartError with Asterisk's output: an ERROR
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def ari_cleanup(asterisk: AsteriskServer) -> AsyncIterator[AsteriskServer]:
    """After the test, hang up every channel still up and wait until they are gone."""
    yield asterisk
    await asterisk.cleanup_channels()


@pytest.fixture
async def test_caller(
    asterisk: AsteriskServer, ari_cleanup: AsteriskServer
) -> AsyncIterator[TestCaller]:
    """A connected :class:`TestCaller` (app ``kp-test``); leftover channels are hung up."""
    caller = TestCaller(asterisk.base_url, asterisk.ari_user, asterisk.ari_password)
    await caller.start()
    try:
        yield caller
    finally:
        await caller.close()
