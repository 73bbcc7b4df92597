#!/usr/bin/env bash
# Make sure a PostgreSQL answers at $PGHOST:$PGPORT (default 127.0.0.1:5432).
# If none does, install Debian's PostgreSQL if needed and start a private cluster under
# $KEYPRESS_STATE_DIR/pg (default .state/pg), owned by the postgres user, trust auth,
# listening on 127.0.0.1 only. Idempotent.
set -euo pipefail

HOST="${PGHOST:-127.0.0.1}"
PORT="${PGPORT:-5432}"
STATE="${KEYPRESS_STATE_DIR:-$(pwd)/.state}"
DATA="$STATE/pg"

log() { printf 'postgres: %s\n' "$*" >&2; }

ready() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$HOST" -p "$PORT"
    else
        (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
    fi
}

if ready; then
    log "answering at $HOST:$PORT"
    exit 0
fi

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ]; then
    log "installing PostgreSQL (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

# Debian's package starts its own cluster when a service manager runs it; try that first.
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for version in $(ls /etc/postgresql); do
        pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null || true
    done
    for _ in $(seq 1 50); do ready && { log "started the system cluster"; exit 0; }; sleep 0.1; done
fi

log "starting a private cluster in $DATA"
run_as_pg() { if [ "$(id -u)" = "0" ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$DATA"
[ "$(id -u)" = "0" ] && chown postgres "$STATE" "$DATA"
if [ ! -f "$DATA/PG_VERSION" ]; then
    run_as_pg "$bindir/initdb" -D "$DATA" -U postgres --auth=trust >/dev/null
fi
run_as_pg "$bindir/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
    -o "-c listen_addresses=$HOST -p $PORT -k $DATA" start >/dev/null
for _ in $(seq 1 100); do ready && { log "private cluster answering at $HOST:$PORT"; exit 0; }; sleep 0.1; done
log "PostgreSQL did not come up; see $DATA/server.log"
exit 1
