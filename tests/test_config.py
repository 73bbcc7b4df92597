"""Settings: file, environment over file, one clear line for each kind of mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from keypress_ari.config import ConfigError, extra_servers, load_settings, require_ari

GOOD = """
[ari]
url = "http://127.0.0.1:8088/ari"
user = "keypress"
password = "s3cret&more"
app = "keypress"

[database]
dsn = "postgresql://postgres@127.0.0.1:5432/keypress"

[log]
level = "debug"
format = "json"
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("KEYPRESS_") and name != "KEYPRESS_TEST_DSN":
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "keypress-ari.toml"
    path.write_text(text)
    return path


def test_file_is_read(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, GOOD))
    ari = require_ari(s)
    assert ari.user == "keypress"
    assert ari.password.get_secret_value() == "s3cret&more"
    assert s.log.format == "json"
    assert "s3cret" not in repr(s)


def test_environment_overrides_one_nested_field(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYPRESS_ARI__PASSWORD", "from-env")
    monkeypatch.setenv("KEYPRESS_LOG__LEVEL", "warning")
    s = load_settings(write(tmp_path, GOOD))
    ari = require_ari(s)
    assert ari.password.get_secret_value() == "from-env"
    assert ari.user == "keypress"  # the rest of the section still comes from the file
    assert s.log.level == "warning"


def test_missing_setting_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('user = "keypress"\n', ""))
    with pytest.raises(ConfigError) as err:
        load_settings(path)
    assert str(err.value) == (
        f"{path}: ari.user: Field required (or set KEYPRESS_ARI__USER)"
    )


def test_unknown_setting_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "\n[calls]\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r"calls\.bogus: unknown setting"):
        load_settings(path)


def test_wrong_value_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('format = "json"', 'format = "xml"'))
    with pytest.raises(ConfigError, match=r"log\.format: Input should be 'console' or 'json'"):
        load_settings(path)


def test_malformed_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "[ari\nuser=")
    with pytest.raises(ConfigError, match="malformed TOML"):
        load_settings(path)


def test_explicit_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_run_needs_the_ari_section(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "[database]\ndsn = 'postgresql://x@127.0.0.1/y'\n"))
    with pytest.raises(ConfigError, match="ari: section missing"):
        require_ari(s)


def test_example_config_is_valid() -> None:
    example = Path(__file__).parent.parent / "config" / "keypress-ari.toml"
    s = load_settings(example)
    assert require_ari(s).app == "keypress"


def test_event_loop_is_uvloop_by_default_and_can_be_asyncio(tmp_path: Path) -> None:
    import asyncio

    import uvloop

    from keypress_ari.cli import loop_factory

    default = load_settings(write(tmp_path, GOOD))
    assert default.runtime.event_loop == "uvloop"
    loop = loop_factory(default.runtime.event_loop)()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    chosen = load_settings(write(tmp_path, GOOD + '\n[runtime]\nevent_loop = "asyncio"\n'))
    loop = loop_factory(chosen.runtime.event_loop)()
    try:
        assert not isinstance(loop, uvloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()
    with pytest.raises(ConfigError, match=r"runtime\.event_loop"):
        load_settings(write(tmp_path, GOOD + '\n[runtime]\nevent_loop = "trio"\n'))


SECOND = """
[[asterisk]]
name = "pbx-b"
url = "http://127.0.0.1:8089/ari"
user = "keypress"
password = "other-secret"
app = "keypress"
"""


def test_asterisk_entries_add_servers(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, GOOD + SECOND))
    assert require_ari(s).url == "http://127.0.0.1:8088/ari"  # [ari] stays the first
    assert [(e.name, e.url) for e in extra_servers(s)] == [
        ("pbx-b", "http://127.0.0.1:8089/ari")]


def test_asterisk_entries_alone(tmp_path: Path) -> None:
    text = SECOND + SECOND.replace("pbx-b", "pbx-c").replace("8089", "8090")
    s = load_settings(write(tmp_path, text + "[database]\ndsn = 'postgresql://x@127.0.0.1/y'\n"))
    assert require_ari(s).url == "http://127.0.0.1:8089/ari"  # the first entry
    assert [e.name for e in extra_servers(s)] == ["pbx-c"]


@pytest.mark.parametrize(("second", "message"), [
    (SECOND.replace("8089", "8090"), "two entries share a name"),
    (SECOND.replace("pbx-b", "pbx-c"), "two servers share an ARI URL"),
])
def test_asterisk_entries_must_differ(tmp_path: Path, second: str, message: str) -> None:
    s = load_settings(write(tmp_path, GOOD + SECOND + second))
    with pytest.raises(ConfigError, match=message):
        extra_servers(s)


def test_asterisk_entry_needs_a_name(tmp_path: Path) -> None:
    text = GOOD + SECOND.replace('name = "pbx-b"\n', "")
    with pytest.raises(ConfigError, match="asterisk"):
        load_settings(write(tmp_path, text))
