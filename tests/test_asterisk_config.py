"""The Asterisk configuration the project ships (asterisk/etc) loads without an error: an
option in the wrong section makes Asterisk drop the whole section with only an ERROR line
at startup (seen: ``taskprocessor_overload_trigger`` under ``type = system`` instead of
``type = global`` left PJSIP's overload trigger at its default), so the test reads what the
test Asterisk printed while it loaded."""

from __future__ import annotations

import re

import pytest

from tests.support.asterisk import AsteriskServer

pytestmark = pytest.mark.asterisk


def test_the_shipped_configuration_loads_without_errors(asterisk: AsteriskServer) -> None:
    output = asterisk.output_tail(100_000)
    loading = output.split("Asterisk Ready.")[0]
    assert "Asterisk Ready." in output, output[-3000:]
    errors = [line for line in loading.splitlines() if re.search(r"\bERROR\[", line)]
    assert not errors, "\n".join(errors)
