"""``keypress-ari doctor``: its judgement over plain facts, and a run against the test
Asterisk and PostgreSQL, right and wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from keypress_ari.config import AriSettings
from keypress_ari.doctor import FASTAGI_MODULES, STASIS_MODULES, Facts, checks, failed, render
from keypress_ari.doctor_probe import examine
from keypress_ari.flows.yamlio import load_catalog_yaml
from tests.support.daemon import RunningDaemon, daemon_settings
from tests.support.process import daemon_env

CATALOG = load_catalog_yaml("""
flow_groups:
  - {name: used, modes: [stasis, ami], flows: [{key: "1", disposition: x}]}
  - {name: orphan, flows: [{key: "1", disposition: y}]}
routers:
  - {name: r, request_key_press: true, flow_group: used, buyers: []}
numbers: []
""", "t.yaml")


def healthy() -> Facts:
    return Facts(ari_url="http://127.0.0.1:8088/ari", app="keypress", ari_status=200,
                 asterisk_version="22.10.1", modules=set(STASIS_MODULES) | set(FASTAGI_MODULES),
                 applications={"keypress"}, asterisk_skew=0.1, schema=6, latest=6,
                 db_skew=-0.2, ami_enabled=True,
                 dialplan="[ Context 'keypress-handover' created by 'pbx_config' ]\n"
                          "  'caller' => 1. Stasis(keypress,handover)")


def test_a_healthy_setup_passes() -> None:
    results = checks(healthy())
    assert not failed(results) and all(c.status == "OK" for c in results), render(results)


def test_each_fault_names_its_fix() -> None:
    f = healthy()
    f.ari_status, f.modules = 401, None
    f.schema = 4
    f.catalog = CATALOG
    f.modules = None
    results = checks(f)
    text = render(results)
    assert failed(results)
    assert "FAIL ARI: http://127.0.0.1:8088/ari refused the user (401)" in text
    assert "fix: make [ari] user/password match" in text
    assert "FAIL PostgreSQL: schema at 4, this keypress-ari needs 006" in text
    assert "keypress-ari db migrate" in text
    assert "router r has no buyers" in text and "flow group orphan is assigned nowhere" in text
    assert "router r has no numbers" in text


def test_missing_modules_and_native_rtp_for_ami() -> None:
    f = healthy()
    f.catalog = CATALOG
    f.modules = (set(STASIS_MODULES) - {"res_ari_bridges"}) | {"bridge_native_rtp"}
    text = render(checks(f))
    assert "FAIL modules (Stasis mode): not loaded: res_ari_bridges" in text
    assert "WARN native RTP bridge" in text and "noload => bridge_native_rtp.so" in text
    f.dialplan = "[ Context 'default' created by 'pbx_config' ]\n  's' => 1. Answer()"
    text = render(checks(f))
    assert "FAIL dialplan: no extension runs Stasis(keypress)" in text
    assert "WARN dialplan (ami handover): no context keypress-handover" in text
    f.ari_url = "http://10.0.0.5:8088/ari"
    assert "WARN http.conf bind: ARI reached on 10.0.0.5" in render(checks(f))


def test_each_server_is_checked_under_its_name() -> None:
    first, second = healthy(), healthy()
    first.server, second.server = "a", "b"
    second.ari_url, second.ari_status = "http://127.0.0.1:18089/ari", 401
    text = render(checks(first, (second,)))
    assert "OK   ARI [a]: http://127.0.0.1:8088/ari answered" in text
    assert "FAIL ARI [b]: http://127.0.0.1:18089/ari refused the user (401)" in text
    assert "modules (Stasis mode) [b]" not in text  # not listed: ARI refused the user
    assert text.count("PostgreSQL: reachable") == 1 and text.count("dialplan:") == 1


@pytest.mark.asterisk
@pytest.mark.pg
async def test_against_the_test_asterisk_right_then_wrong(
        daemon_factory: Any, asterisk: Any, pg_dsn: str) -> None:
    running: RunningDaemon = await daemon_factory()  # registers the Stasis app
    assert running.daemon.stream is not None
    settings = daemon_settings(asterisk, pg_dsn)
    results = await examine(settings)
    text = render(results)
    assert not failed(results), text
    assert "OK   ARI:" in text and "OK   Stasis app: keypress registered" in text
    assert "OK   PostgreSQL: reachable, schema at" in text
    assert "OK   dialplan: an extension runs Stasis(keypress)" in text  # read over AMI
    wrong = settings.model_copy(update={"ari": AriSettings(
        url=asterisk.base_url, user=asterisk.ari_user, password="wrong-password",
        app="keypress")})
    results = await examine(wrong)
    assert failed(results) and "refused the user (401)" in render(results)


@pytest.mark.asterisk
@pytest.mark.pg
def test_the_command_exits_1_on_a_wrong_config(asterisk: Any, pg_dsn: str,
                                               tmp_path: Path) -> None:
    env = daemon_env(asterisk, pg_dsn, tmp_path)
    env["KEYPRESS_ARI__URL"] = "http://127.0.0.1:9/ari"  # nothing listens there
    out = subprocess.run([sys.executable, "-m", "keypress_ari", "doctor"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAIL ARI: http://127.0.0.1:9/ari unreachable" in out.stdout
    assert "fix: start Asterisk" in out.stdout
    assert "PostgreSQL: reachable" in out.stdout  # the other checks still ran
