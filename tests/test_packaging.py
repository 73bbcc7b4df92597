"""The release artefacts: an sdist and a wheel build from the repository, the wheel installs
in a clean virtual environment, and the installed command works, package data included."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from keypress_ari import __version__
from tests.pg import empty_database

pytestmark = pytest.mark.pg
ROOT = Path(__file__).parent.parent


def run(*cmd: str | Path, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                         timeout=timeout, check=False, **kw)  # type: ignore[call-overload]
    assert out.returncode == 0, f"{cmd}: {out.stdout[-2000:]}{out.stderr[-2000:]}"
    return out  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin folder of a fresh venv with only the built wheel (and its dependencies)."""
    base = tmp_path_factory.mktemp("release")
    dist = base / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, ROOT)
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    assert [w.name for w in wheels] == [f"keypress_ari-{__version__}-py3-none-any.whl"]
    assert [s.name for s in sdists] == [f"keypress_ari-{__version__}.tar.gz"]
    venv.create(base / "venv", with_pip=True)
    bin_dir = base / "venv" / "bin"
    run(bin_dir / "pip", "install", "-q", "--disable-pip-version-check", wheels[0])
    return bin_dir


def test_the_installed_command_says_its_version_and_help(installed: Path) -> None:
    assert run(installed / "keypress-ari", "--version").stdout.strip() == \
        f"keypress-ari {__version__}"
    helped = run(installed / "keypress-ari", "--help").stdout
    for command in ("run", "doctor", "db", "flows", "calls", "simulate", "blocklist"):
        assert command in helped


def test_the_wheel_carries_migrations_templates_and_static_files(installed: Path) -> None:
    probe = ("from importlib import resources; import keypress_ari, sys; "
             "print(keypress_ari.__file__); root = resources.files('keypress_ari'); "
             "print(len([p for p in (root / 'store' / 'migrations').iterdir() "
             "if p.name.endswith('.sql')])); "
             "print(len(list((root / 'console' / 'templates').iterdir())))")
    out = run(installed / "python", "-c", probe, cwd="/").stdout.split()
    assert out[0].startswith(str(installed.parent)), "imported from the venv, not the repo"
    shipped = len(list((ROOT / "keypress_ari" / "store" / "migrations").glob("*.sql")))
    templates = len(list((ROOT / "keypress_ari" / "console" / "templates").iterdir()))
    assert int(out[1]) == shipped and int(out[2]) == templates


async def test_the_installed_command_migrates_an_empty_database(installed: Path) -> None:
    async with empty_database() as dsn:
        env = {"PATH": "/usr/bin:/bin", "KEYPRESS_DATABASE__DSN": dsn,
               "KEYPRESS_CONFIG": "/nonexistent/keypress-ari.toml"}
        out = run(installed / "keypress-ari", "db", "migrate", env=env, cwd="/", timeout=60)
        assert out.stdout.startswith("applied: 001_catalog")
