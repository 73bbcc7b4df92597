#!/usr/bin/env bash
# `make demo`: Asterisk + PostgreSQL + the daemon on this machine, one demo call, its timeline.
# Everything listens on 127.0.0.1 only. Logs go to .state/. KEEP=1 leaves the daemon and
# Asterisk running afterwards (stop them with: kill $(cat .state/*.pid)).
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="$(pwd)/.state"
BIN="$(pwd)/.venv/bin"
mkdir -p "$STATE"

export KEYPRESS_CONFIG="$(pwd)/config/keypress-ari.toml"
export KEYPRESS_DATABASE__DSN="${KEYPRESS_DATABASE__DSN:-postgresql://postgres@127.0.0.1:5432/keypress}"
PGADMIN="${KEYPRESS_DATABASE__DSN%/*}/postgres"

say() { printf '\n== %s\n' "$*"; }
pids=()
cleanup() {
    if [ "${KEEP:-0}" = "1" ]; then
        say "left running: daemon and Asterisk (pids in $STATE/*.pid)"
        return
    fi
    # Newest first: the daemon stops (and flushes its call log) before Asterisk does.
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
        wait "${pids[i]}" 2>/dev/null || true
    done
}
trap cleanup EXIT

say "Asterisk (config from asterisk/etc, ARI on 127.0.0.1:8088)"
if curl -fsS -u keypress:keypress-secret http://127.0.0.1:8088/ari/asterisk/ping >/dev/null 2>&1; then
    echo "an Asterisk already answers on 8088; using it"
else
    asterisk/run-asterisk.sh "$STATE/asterisk" >"$STATE/asterisk.log" 2>&1 &
    pids+=($!); echo $! >"$STATE/asterisk.pid"
    for _ in $(seq 1 150); do
        curl -fsS -u keypress:keypress-secret http://127.0.0.1:8088/ari/asterisk/ping >/dev/null 2>&1 && break
        kill -0 "${pids[-1]}" 2>/dev/null || { tail -20 "$STATE/asterisk.log"; exit 1; }
        sleep 0.2
    done
    echo "Asterisk up (log: $STATE/asterisk.log)"
fi

say "PostgreSQL database, schema, flows (examples/flows.yaml)"
"$BIN/python" - "$PGADMIN" <<'PY'
import asyncio, sys, asyncpg
async def main() -> None:
    conn = await asyncpg.connect(sys.argv[1])
    if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'keypress'"):
        await conn.execute("CREATE DATABASE keypress")
        print("created database keypress")
    await conn.close()
asyncio.run(main())
PY
"$BIN/keypress-ari" db migrate
"$BIN/keypress-ari" flows import examples/flows.yaml

say "the daemon (keypress-ari run; log: $STATE/daemon.log)"
"$BIN/keypress-ari" run >"$STATE/daemon.log" 2>&1 &
pids+=($!); echo $! >"$STATE/daemon.pid"

say "a demo call"
"$BIN/python" scripts/demo_call.py
