#!/usr/bin/env bash
# make container-test: build docker/Dockerfile and docker/asterisk.Dockerfile, check the
# images, start docker/compose.yaml's stack, wait for health, place the demo calls inside
# the stack, read their call log through the admin API, stop the stack.
#
# Engine: Docker (Debian docker.io; dockerd is started here when it is not running) with
# `docker compose` or, where that plugin is absent (Debian), Debian's docker-compose 1.29.
# `podman run` cannot start containers on these machines (crun/runc: setrlimit RLIMIT_NPROC:
# Operation not permitted). No registry serves images here: the bases are made locally
# (scripts/container-base.sh) and the compose file's postgres:16 is swapped for a local
# stand-in (docker/compose.local-postgres.yaml). See docker/README.md "Containers, tested here".
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
export ENGINE=docker DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
ARI_PORT=${CT_ARI_PORT:-18188} ADMIN_PORT=${CT_ADMIN_PORT:-18189} PG_PORT=${CT_PG_PORT:-18187}
PROJECT=kp-ct
STATE=$(mktemp -d /tmp/keypress-ct.XXXXXX)
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
PG_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
FILES=(-f docker/compose.yaml -f docker/compose.local-postgres.yaml)
say() { printf 'container-test: %s\n' "$*"; }
compose() {
    if docker compose version >/dev/null 2>&1; then docker compose -p "$PROJECT" "${FILES[@]}" "$@"
    else docker-compose -p "$PROJECT" "${FILES[@]}" "$@"; fi
}
die() { say "FAILED: $*"; compose logs --no-color --tail 15 2>&1 | sed 's/^/  /' || true; exit 1; }

cleanup() { compose down -v --timeout 20 >/dev/null 2>&1 || true; }
trap cleanup EXIT

# what it needs, on a fresh Debian/Ubuntu machine (root): Docker's engine, debootstrap, curl
need=()
if [ "$ENGINE" = docker ]; then
    command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
    command -v docker >/dev/null 2>&1 || need+=(docker.io)
fi
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 \
    || need+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ss >/dev/null 2>&1 || need+=(iproute2)
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
    local t=$(date +%s)
    $ENGINE build -q --network host -f "$2" -t "$1" . \
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

# 3. the stack: docker/compose.yaml as users run it (docker-compose -p), with the postgres
# service's image swapped for a local stand-in (docker/compose.local-postgres.yaml; no
# registry serves postgres:16 here). Published on 127.0.0.1 only, on test ports.
export KEYPRESS_ARI_PORT=$ARI_PORT KEYPRESS_ADMIN_PORT=$ADMIN_PORT KEYPRESS_PG_PORT=$PG_PORT
export KEYPRESS_ADMIN_TOKEN=$TOKEN KEYPRESS_PG_PASSWORD=$PG_PASSWORD
t=$(date +%s)
compose build -q >"$STATE/compose-build.log" 2>&1 || { tail -30 "$STATE/compose-build.log"; die "compose build"; }
say "compose build (postgres stand-in) in $(( $(date +%s) - t )) s"
healthy() {  # SERVICE SECONDS: the service's container reports healthy
    local id; id=$(compose ps -q "$1")
    for _ in $(seq 1 "$2"); do
        [ "$($ENGINE inspect -f '{{.State.Health.Status}}' "$id" 2>/dev/null)" = healthy ] && return 0
        [ "$($ENGINE inspect -f '{{.State.Running}}' "$id" 2>/dev/null)" = true ] || return 1
        sleep 1
    done; return 1
}
t=$(date +%s)
compose up -d >"$STATE/compose-up.log" 2>&1 || { cat "$STATE/compose-up.log"; die "compose up"; }
say "compose up -d: postgres healthy, migrate done, asterisk healthy, keypress started in $(( $(date +%s) - t )) s"
errors=$(compose logs --no-color asterisk 2>&1 | sed '/Asterisk Ready/q' | grep 'ERROR\[' || true)
[ -z "$errors" ] || die "Asterisk reported errors loading asterisk/etc: $errors"
compose --profile examples run --rm -T flows || die "flows import (the examples profile)"
ADMIN=http://127.0.0.1:$ADMIN_PORT
api() { curl -fsS --max-time 5 -H "Authorization: Bearer $TOKEN" "$ADMIN$1"; }
for i in $(seq 1 60); do curl -fsS --max-time 2 "$ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.5
    [ "$i" = 60 ] && die "/readyz not ready in 30 s"; done
say "daemon ready: /readyz 200 on 127.0.0.1:$ADMIN_PORT after $(( $(date +%s) - T0 )) s"
published=$(ss -Htln | awk '{print $4}' | grep -E ":($ARI_PORT|$ADMIN_PORT|$PG_PORT)\$" | sort -u | tr '\n' ' ')
say "published: $published"
echo "$published" | grep -qvE '(^| )(0\.0\.0\.0|\*|\[::\]):' || die "a port published beyond 127.0.0.1: $published"

# 4. the demo call, placed from a one-off container of the keypress service (on the stack
# network, its environment; the image's Python has the package)
compose run --rm -T --no-deps -v "$PWD/scripts/demo_call.py:/tmp/demo_call.py:ro" \
    --entrypoint timeout keypress 120 python3 /tmp/demo_call.py >"$STATE/demo.log" 2>&1 \
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
healthy keypress 40 || die "daemon container not healthy"
say "daemon container healthy (HEALTHCHECK /readyz)"
vol=$(compose exec -T keypress ls -A /var/lib/keypress-ari | tr '\n' ' ')
[ -n "$vol" ] || die "nothing written to the state volume"
say "state volume ${PROJECT}_keypress-state: $vol"

# 6. stop: the daemon drains (SIGTERM, stop_grace_period 20 s) and exits 0
daemon=$(compose ps -q keypress)
t=$(date +%s)
compose stop -t 20 >/dev/null 2>&1 || die "compose stop"
code=$($ENGINE inspect -f '{{.State.ExitCode}}' "$daemon")
[ "$code" = 0 ] || die "the daemon exited $code on stop"
say "stack stopped in $(( $(date +%s) - t )) s (the daemon exited 0)"
cleanup
$ENGINE image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'keypress|python|debian' | sed 's/^/  /'
say "OK in $(( $(date +%s) - T0 )) s"
