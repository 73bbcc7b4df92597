#!/usr/bin/env bash
# Make the Dockerfiles' base images when no registry serves them: try a pull first; if it
# fails, build a local stand-in with debootstrap (minbase) and tag it with the same name.
#   python:3.11-slim  <- Debian bookworm + python3 python3-venv python3-pip (Python 3.11;
#                        /usr/bin/python3, so the Dockerfile uses a venv, see docker/Dockerfile)
#   debian:sid-slim   <- Debian sid minbase
# The trees are cached as tarballs under /var/cache/keypress-ari/ (reruns take seconds).
set -euo pipefail
ENGINE=${ENGINE:-docker}
CACHE=${KEYPRESS_BASE_CACHE:-/var/cache/keypress-ari}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$CACHE"

have() { $ENGINE image inspect "$1" >/dev/null 2>&1; }

# This machine reaches PyPI through a TLS proxy with its own CA: give the local base the
# host's CA bundle and point pip at it (a real registry base needs neither).
trust_host_cas() {  # ROOT
    [ -s /etc/ssl/certs/ca-certificates.crt ] || return 0
    mkdir -p "$1/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$1/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$1/etc/pip.conf"
    # The mirror here may serve a Release file past its Valid-Until (a frozen snapshot).
    mkdir -p "$1/etc/apt/apt.conf.d"
    echo 'Acquire::Check-Valid-Until "false";' >"$1/etc/apt/apt.conf.d/99keypress-local-base"
}

make_base() {  # NAME SUITE EXTRA_PACKAGES
    local name=$1 suite=$2 extra=$3 tarball="$CACHE/base-${1//[:\/]/_}.tar"
    if [ ! -s "$tarball" ]; then
        local root; root=$(mktemp -d "$CACHE/root.XXXXXX")
        echo "container-base: debootstrap $suite into $root"
        debootstrap --variant=minbase ${extra:+--include=$extra} "$suite" "$root" "$MIRROR" >/dev/null
        chroot "$root" apt-get clean
        trust_host_cas "$root"
        rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc "$root"/usr/share/man
        tar -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -rf "$root"
    fi
    $ENGINE import $([ "$ENGINE" = podman ] && echo -q) "$tarball" "docker.io/library/$name" >/dev/null
    echo "container-base: made a local base docker.io/library/$name from $tarball"
}

for spec in "python:3.11-slim bookworm python3,python3-venv,python3-pip" \
            "debian:sid-slim sid "; do
    read -r name suite extra <<<"$spec"
    if have "docker.io/library/$name"; then echo "container-base: $name present"; continue; fi
    if timeout 60 $ENGINE pull -q "docker.io/library/$name" >/dev/null 2>&1; then
        echo "container-base: pulled $name"; continue
    fi
    echo "container-base: pull of $name failed; making a local base"
    make_base "$name" "$suite" "$extra"
done
