#!/usr/bin/env bash
# make container-test: build docker/Dockerfile and docker/asterisk.Dockerfile, check the
# images, run the stack, place the demo call, read its call log through the admin API, stop.
#
# Engine: Docker (Debian docker.io; dockerd is started here when it is not running).
# `podman run` cannot start containers on these machines (crun/runc: setrlimit RLIMIT_NPROC:
# Operation not permitted), and there is no compose plugin, so the script drives the
# compose file's images and commands with `docker run` on the host network, ports on
# 127.0.0.1 only. PostgreSQL: a fresh database on the host's server (no postgres:16 image
# here). docker/compose.yaml stays the user-facing file. See docker/README.md "Tested here".
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
export ENGINE=${ENGINE:-docker} DOCKER_BUILDKIT=0
ARI_PORT=${CT_ARI_PORT:-18188} ADMIN_PORT=${CT_ADMIN_PORT:-18189}
PG=${CT_PG:-postgresql://postgres@127.0.0.1:5432}
DB=keypress_ct
STATE=$(mktemp -d /tmp/keypress-ct.XXXXXX)
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
NAMES=(kp-ct-daemon kp-ct-asterisk)
say() { printf 'container-test: %s\n' "$*"; }
die() { say "FAILED: $*"; for n in "${NAMES[@]}"; do $ENGINE logs --tail 15 "$n" 2>&1 | sed "s/^/  $n: /"; done; exit 1; }

cleanup() {
    $ENGINE stop -t 20 "${NAMES[@]}" >/dev/null 2>&1 || true
    $ENGINE rm -f "${NAMES[@]}" >/dev/null 2>&1 || true
    $ENGINE volume rm -f kp-ct-state >/dev/null 2>&1 || true
}
trap cleanup EXIT

# what it needs, on a fresh Debian/Ubuntu machine (root): Docker's engine, debootstrap, curl
need=()
if [ "$ENGINE" = docker ]; then
    command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
    command -v docker >/dev/null 2>&1 || need+=(docker.io)
fi
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "need root to install: ${need[*]}"
    say "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ "$ENGINE" = docker ] && ! docker info >/dev/null 2>&1; then
    say "starting dockerd (log $STATE/dockerd.log)"
    (setsid dockerd >"$STATE/dockerd.log" 2>&1 &)
    for i in $(seq 1 30); do docker info >/dev/null 2>&1 && break; sleep 1
        [ "$i" = 30 ] && die "dockerd did not start"; done
fi
cleanup

# 1. bases and images
bash scripts/container-base.sh
build() {  # TAG DOCKERFILE
    local t=$(date +%s) extra=()
    [ "$ENGINE" = podman ] && extra=(--isolation chroot --format docker)
    $ENGINE build -q "${extra[@]}" --network host -f "$2" -t "$1" . \
        >"$STATE/build-${1%%:*}.log" 2>&1 || { tail -30 "$STATE/build-${1%%:*}.log"; die "build $1"; }
    say "built $1 in $(( $(date +%s) - t )) s"
}
build keypress-ari:dev docker/Dockerfile
build keypress-asterisk:dev docker/asterisk.Dockerfile

# 2. image requirements
inspect() { $ENGINE image inspect --format "$2" "$1"; }
for img in keypress-ari:dev keypress-asterisk:dev; do
    user=$(inspect "$img" '{{.Config.User}}')
    [ -n "$user" ] && [ "$user" != root ] && [ "$user" != 0 ] || die "$img runs as root"
    if { inspect "$img" '{{range .Config.Env}}{{println .}}{{end}}'; $ENGINE history --no-trunc --format '{{.CreatedBy}}' "$img"; } \
        | grep -Ei '(PASSWORD|TOKEN|SECRET)[A-Z_]*=[^ $]' ; then die "$img has a secret baked in"; fi
    say "$img: user $user, no secret in env or history"
done
inspect keypress-ari:dev '{{json .Config.Healthcheck}}' | grep -q readyz || die "no /readyz HEALTHCHECK"
inspect keypress-ari:dev '{{json .Config.Volumes}}' | grep -q /var/lib/keypress-ari || die "no state volume"
inspect keypress-ari:dev '{{range .Config.Env}}{{println .}}{{end}}' | grep -q '^KEYPRESS_JOURNAL__STATE_DIR=/var/lib/keypress-ari$' \
    || die "journal not on the volume"
say "keypress-ari:dev: HEALTHCHECK on /readyz, journal on the volume /var/lib/keypress-ari"

# 3. the stack: the compose file's services, on the host network (127.0.0.1 only)
psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" \
    || die "host PostgreSQL at $PG"
say "database $DB on the host PostgreSQL"
healthy() {  # NAME SECONDS
    for _ in $(seq 1 "$2"); do
        [ "$($ENGINE inspect -f '{{.State.Health.Status}}' "$1" 2>/dev/null)" = healthy ] && return 0
        [ "$($ENGINE inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" = true ] || return 1
        sleep 1
    done; return 1
}
$ENGINE run -d --name kp-ct-asterisk --init --network host \
    -e KEYPRESS_ASTERISK_HTTP_BIND=127.0.0.1 keypress-asterisk:dev \
    --http-port "$ARI_PORT" --ami-port 18190 --sip-port 18160 --agi-port 18173 \
    --rtp-start 18200 --rtp-end 18299 >/dev/null
healthy kp-ct-asterisk 90 || die "Asterisk not healthy (core waitfullybooted)"
say "Asterisk healthy (core waitfullybooted; ARI on 127.0.0.1:$ARI_PORT) after $(( $(date +%s) - T0 )) s"

KP_ENV=(-e KEYPRESS_ARI__URL="http://127.0.0.1:$ARI_PORT/ari" -e KEYPRESS_ARI__USER=keypress
        -e KEYPRESS_ARI__PASSWORD=keypress-secret -e KEYPRESS_DATABASE__DSN="$PG/$DB")
once() { $ENGINE run --rm --network host "${KP_ENV[@]}" "$@"; }
once keypress-ari:dev db migrate >"$STATE/migrate.log" 2>&1 || { cat "$STATE/migrate.log"; die "db migrate"; }
once keypress-ari:dev flows import /usr/share/keypress-ari/examples/flows.yaml \
    || die "flows import"
$ENGINE run -d --name kp-ct-daemon --init --network host "${KP_ENV[@]}" \
    -e KEYPRESS_ADMIN__TOKEN="$TOKEN" -e KEYPRESS_ADMIN__PORT="$ADMIN_PORT" \
    -v kp-ct-state:/var/lib/keypress-ari keypress-ari:dev run >/dev/null
ADMIN=http://127.0.0.1:$ADMIN_PORT
api() { curl -fsS --max-time 5 -H "Authorization: Bearer $TOKEN" "$ADMIN$1"; }
for i in $(seq 1 60); do curl -fsS --max-time 2 "$ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.5
    [ "$i" = 60 ] && die "/readyz not ready in 30 s"; done
say "daemon ready: /readyz 200 after $(( $(date +%s) - T0 )) s"

# 4. the demo call, placed from a container of the daemon image (its Python has the package)
once -v "$PWD/scripts/demo_call.py:/tmp/demo_call.py:ro" --entrypoint timeout \
    keypress-ari:dev 120 python3 /tmp/demo_call.py >"$STATE/demo.log" 2>&1 \
    || { cat "$STATE/demo.log"; die "demo call"; }
grep '^demo:' "$STATE/demo.log" | sed 's/^/  /'

# 5. the call log through the admin API
api /calls >"$STATE/calls.json" || die "GET /calls"
python3 - "$STATE/calls.json" "$ADMIN" "$TOKEN" <<'PY' || die "no key press in the call log"
import json, sys, urllib.request
calls = json.load(open(sys.argv[1]))["calls"]
presses = 0
for c in calls:
    req = urllib.request.Request(f"{sys.argv[2]}/calls/{c['id']}",
                                 headers={"Authorization": f"Bearer {sys.argv[3]}"})
    events = json.load(urllib.request.urlopen(req, timeout=5))["events"]
    keys = [e for e in events if e["kind"] == "key_press"]
    presses += len(keys)
    print(f"  call {c['id']}: {len(events)} events, key presses "
          f"{[e.get('data', {}).get('digit', e.get('detail')) for e in keys]}")
print(f"  {len(calls)} calls, {presses} key presses (GET /calls, GET /calls/ID)")
sys.exit(0 if calls and presses else 1)
PY
healthy kp-ct-daemon 40 || die "daemon container not healthy"
say "daemon container healthy (HEALTHCHECK /readyz)"
vol=$($ENGINE run --rm -v kp-ct-state:/v --entrypoint ls keypress-ari:dev -A /v | tr '\n' ' ')
[ -n "$vol" ] || die "nothing written to the state volume"
say "state volume kp-ct-state: $vol"

# 6. stop
t=$(date +%s); cleanup
say "stack stopped in $(( $(date +%s) - t )) s"
$ENGINE image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'keypress|python|debian' | sed 's/^/  /'
say "OK in $(( $(date +%s) - T0 )) s"
