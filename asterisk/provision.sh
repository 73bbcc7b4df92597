#!/usr/bin/env bash
# Provision an Asterisk binary for development and tests (idempotent, cached).
#
# Prefers a system `asterisk` (Ubuntu: `apt install asterisk`). On Debian, which has no
# asterisk package, builds a Debian-sid minbase chroot holding Asterisk 22 under
# $KEYPRESS_ASTERISK_ROOT (default /var/cache/keypress-ari/asterisk-sid).
# Prints nothing but progress on stderr; `asterisk/run-asterisk.sh` starts the result.
set -euo pipefail

ROOT="${KEYPRESS_ASTERISK_ROOT:-/var/cache/keypress-ari/asterisk-sid}"
MIRROR="${KEYPRESS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
MARKER="$ROOT/.keypress-ready"
PACKAGES="asterisk asterisk-modules asterisk-core-sounds-en-gsm asterisk-moh-opsound-gsm"

log() { printf 'provision: %s\n' "$*" >&2; }

if [ "${KEYPRESS_ASTERISK_FORCE_CHROOT:-0}" != "1" ] && command -v asterisk >/dev/null 2>&1; then
    log "system asterisk found at $(command -v asterisk); no chroot needed"
    exit 0
fi

if [ -f "$MARKER" ]; then
    log "chroot ready at $ROOT"
    exit 0
fi

if [ "$(id -u)" != "0" ]; then
    log "building the Asterisk chroot needs root (debootstrap, chroot, mount)"
    exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

rm -rf "$ROOT"
mkdir -p "$(dirname "$ROOT")"
log "debootstrap sid into $ROOT (about a minute)"
unshare --mount --propagation private \
    debootstrap --variant=minbase sid "$ROOT" "$MIRROR" >/dev/null

printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod +x "$ROOT/usr/sbin/policy-rc.d"
echo 'Acquire::Check-Valid-Until "false";' >"$ROOT/etc/apt/apt.conf.d/99keypress-no-valid-until"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"

log "installing $PACKAGES in the chroot"
unshare --mount --propagation private sh -c "
    mount -t proc proc '$ROOT/proc' &&
    chroot '$ROOT' sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null && apt-get clean'
"
rm -rf "$ROOT/var/lib/apt/lists/"* "$ROOT/usr/share/doc" "$ROOT/usr/share/man"
touch "$MARKER"
log "chroot ready at $ROOT ($(chroot "$ROOT" /usr/sbin/asterisk -V))"
