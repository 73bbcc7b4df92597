#!/usr/bin/env bash
# System packages the project needs on Debian/Ubuntu (idempotent; needs root).
set -euo pipefail
need=()
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v asterisk >/dev/null 2>&1 || command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v pg_isready >/dev/null 2>&1 || need+=(postgresql-client)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# the unit under a real systemd (tests/test_systemd_unit.py): a container tree and nspawn
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
# the console's browser tests (tests/test_console_browser.py): Debian's headless Chromium
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -eq 0 ]; then
    echo "system-deps: nothing to install" >&2
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "system-deps: need root to install: ${need[*]} (run: sudo make system-deps)" >&2
    exit 1
fi
echo "system-deps: installing ${need[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
