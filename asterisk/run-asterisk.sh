#!/usr/bin/env bash
# Start Asterisk in the foreground with the project's configuration.
#
#   asterisk/run-asterisk.sh RUNDIR [--http-port N] [--ami-port N] [--sip-port N] [--agi-port N]
#                                   [--rtp-start N --rtp-end N] [--http-bind ADDR]
#
# Renders asterisk/etc/*.conf into RUNDIR/etc (ports and directories substituted), creates
# RUNDIR/{run,log,spool/recording,db,lib,keys,cache}, then execs Asterisk so that the PID of
# this script IS Asterisk's PID (SIGTERM stops it; the caller must wait() it).
#
# Uses a system `asterisk` when there is one (Ubuntu: apt install asterisk); otherwise the
# Debian-sid chroot made by asterisk/provision.sh ($KEYPRESS_ASTERISK_ROOT, default
# /var/cache/keypress-ari/asterisk-sid), run in a private mount namespace with /proc and
# RUNDIR mounted into it (the mounts vanish with the process).
#
# --http-bind ADDR: the address HTTP (ARI) listens on, default 127.0.0.1 as http.conf says;
# a container uses 0.0.0.0 so the daemon can reach it over the container network.
#
# Environment: KEYPRESS_ASTERISK_ROOT, KEYPRESS_ASTERISK_FORCE_CHROOT=1 (ignore a system
# asterisk), KEYPRESS_ASTERISK_MODDIR / KEYPRESS_ASTERISK_DATADIR (system asterisk only),
# KEYPRESS_ASTERISK_HTTP_BIND (the default of --http-bind).
set -euo pipefail

die() { printf 'run-asterisk: %s\n' "$*" >&2; exit 2; }

HERE="$(cd "$(dirname "$0")" && pwd)"
CONF_SRC="$HERE/etc"
ROOT="${KEYPRESS_ASTERISK_ROOT:-/var/cache/keypress-ari/asterisk-sid}"

[ $# -ge 1 ] || die "usage: $0 RUNDIR [--http-port N] [--ami-port N] [--sip-port N] [--rtp-start N --rtp-end N] [--http-bind ADDR]"
case "$1" in -*) die "the first argument must be RUNDIR, got '$1'";; esac
RUNDIR="$1"; shift

HTTP_PORT=8088 AMI_PORT=5038 SIP_PORT=5060 AGI_PORT=4573 RTP_START=10000 RTP_END=10999
HTTP_BIND="${KEYPRESS_ASTERISK_HTTP_BIND:-127.0.0.1}"
while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || die "option $1 needs a value"
    case "$1" in
        --http-port) HTTP_PORT="$2" ;;
        --ami-port) AMI_PORT="$2" ;;
        --sip-port) SIP_PORT="$2" ;;
        --agi-port) AGI_PORT="$2" ;;
        --rtp-start) RTP_START="$2" ;;
        --rtp-end) RTP_END="$2" ;;
        --http-bind) HTTP_BIND="$2" ;;
        *) die "unknown option $1" ;;
    esac
    shift 2
done
for value in "$HTTP_PORT" "$AMI_PORT" "$SIP_PORT" "$AGI_PORT" "$RTP_START" "$RTP_END"; do
    case "$value" in ''|*[!0-9]*) die "ports must be numbers, got '$value'";; esac
    [ "$value" -ge 1 ] && [ "$value" -le 65535 ] || die "port out of range: $value"
done
[ "$RTP_START" -le "$RTP_END" ] || die "--rtp-start ($RTP_START) is above --rtp-end ($RTP_END)"
case "$HTTP_BIND" in ''|*[!0-9A-Fa-f.:]*) die "--http-bind needs an IP address, got '$HTTP_BIND'";; esac

# Which Asterisk: a system binary first, else the chroot.
MODE=""
if [ "${KEYPRESS_ASTERISK_FORCE_CHROOT:-0}" != "1" ] && command -v asterisk >/dev/null 2>&1; then
    MODE=system
    ASTERISK_BIN="$(command -v asterisk)"
    DATADIR="${KEYPRESS_ASTERISK_DATADIR:-/usr/share/asterisk}"
    MODDIR="${KEYPRESS_ASTERISK_MODDIR:-}"
    if [ -z "$MODDIR" ]; then
        for dir in /usr/lib/x86_64-linux-gnu/asterisk/modules /usr/lib/aarch64-linux-gnu/asterisk/modules \
                   /usr/lib/asterisk/modules /usr/lib64/asterisk/modules; do
            if [ -d "$dir" ]; then MODDIR="$dir"; break; fi
        done
    fi
    [ -n "$MODDIR" ] || die "cannot find the Asterisk modules folder; set KEYPRESS_ASTERISK_MODDIR"
elif [ -x "$ROOT/usr/sbin/asterisk" ]; then
    MODE=chroot
    DATADIR=/usr/share/asterisk
    MODDIR=/usr/lib/x86_64-linux-gnu/asterisk/modules
    [ "$(id -u)" = "0" ] || die "running the Asterisk chroot needs root (unshare, mount, chroot)"
else
    die "no system asterisk and no chroot at $ROOT: run make asterisk (asterisk/provision.sh)"
fi

# Render the configuration.
mkdir -p "$RUNDIR"
RUNDIR="$(cd "$RUNDIR" && pwd -P)"
case "$RUNDIR" in *'|'*|*'&'*|*'\'*) die "RUNDIR must not contain | & or \\: $RUNDIR";; esac
# Asterisk's control socket (RUNDIR/run/asterisk.ctl) must fit in a unix socket path.
[ "${#RUNDIR}" -le 80 ] || die "RUNDIR path too long for Asterisk's control socket: $RUNDIR"
mkdir -p "$RUNDIR"/etc "$RUNDIR"/run "$RUNDIR"/log "$RUNDIR"/spool/recording \
         "$RUNDIR"/db "$RUNDIR"/lib "$RUNDIR"/keys "$RUNDIR"/cache
for src in "$CONF_SRC"/*.conf; do
    sed -e "s|@RUNDIR@|$RUNDIR|g" -e "s|@DATADIR@|$DATADIR|g" -e "s|@MODDIR@|$MODDIR|g" \
        -e "s|@HTTP_PORT@|$HTTP_PORT|g" -e "s|@AMI_PORT@|$AMI_PORT|g" \
        -e "s|@SIP_PORT@|$SIP_PORT|g" -e "s|@AGI_PORT@|$AGI_PORT|g" -e "s|@RTP_START@|$RTP_START|g" \
        -e "s|@RTP_END@|$RTP_END|g" "$src" >"$RUNDIR/etc/$(basename "$src")"
done
if grep -l '@[A-Z_]*@' "$RUNDIR"/etc/*.conf >/dev/null 2>&1; then
    die "unsubstituted placeholder in $(grep -l '@[A-Z_]*@' "$RUNDIR"/etc/*.conf | head -1)"
fi
if [ "$HTTP_BIND" != 127.0.0.1 ]; then
    sed -i -e "s|^bindaddr = 127\.0\.0\.1\$|bindaddr = $HTTP_BIND|" "$RUNDIR/etc/http.conf"
    grep -qx "bindaddr = $HTTP_BIND" "$RUNDIR/etc/http.conf" ||
        die "cannot set the HTTP bind address: no 'bindaddr = 127.0.0.1' line in http.conf"
fi

ARGS=(-f -n -C "$RUNDIR/etc/asterisk.conf")
if [ "$MODE" = system ]; then
    exec "$ASTERISK_BIN" "${ARGS[@]}"
fi
# Chroot: private mount namespace; every step execs so the PID stays the same.
# RUNDIR is bind-mounted at the same path inside ROOT, so all paths agree.
exec unshare --mount --propagation private sh -c '
    root="$1"; rundir="$2"; shift 2
    mount -t proc proc "$root/proc" &&
    mkdir -p "$root$rundir" &&
    mount --bind "$rundir" "$root$rundir" &&
    exec chroot "$root" /usr/sbin/asterisk "$@"
' run-asterisk "$ROOT" "$RUNDIR" "${ARGS[@]}"
