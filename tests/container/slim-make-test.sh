#!/usr/bin/env bash
# Licensed under the Apache License, Version 2.0.
#
# `make test` of a fresh clone in a fresh debian:bookworm-slim container, as
# CI's usual container runs it: nothing installed beforehand but git and
# make (to clone and to start make), everything else by make test's own
# dependency step (tests/install-deps.sh).
#
#   bash tests/container/slim-make-test.sh [STEP...]
#
# Steps (default: start clone test rm):
#   start    make or reuse the base image (base-image.sh: debootstrap
#            --variant=minbase, trimmed like the slim image), start a new
#            container and install git and make in it
#   clone    a fresh clone of the repository's $IMC_SLIM_REV (default HEAD,
#            committed work only) into /root/mod_imchallenge, from a git
#            bundle (an earlier clone is removed)
#   prepare  `make test TEST_SUITES=`: make test's dependency step and
#            build, no suite (on a busy machine, to do the installing early;
#            the later `make test` then finds it present)
#   test     `CI=true make test` in the container; the log goes to
#            $IMC_SLIM_LOG (default /var/tmp/imc-slim-make-test.log), its
#            summary (one line per suite, the total) is printed at the end;
#            exits with make's status
#   rm       remove the container and its image store
#
# IMC_SLIM_NICE=N runs the steps inside at that niceness (default 0).
#
# The container:
#   --network host      apt reaches Debian's mirror and npm its registry;
#                       the tests' servers listen on 127.0.0.1 only
#   --ulimit nofile=16384:16384 --ulimit nproc=4096:4096
#   --privileged        for make test-docker, which runs podman inside
#                       (mount and user namespaces, overlay mounts, cgroups)
#                       and debootstrap (which mounts /proc in its root);
#                       the other suites would not need it
#   /var/lib/containers a directory of the host's file system, so that the
#                       inner podman's overlay storage is not on overlay
#                       (overlay on overlay is refused)
#   --shm-size 1g       Chromium's shared memory (podman's default is 64 MB)
#
# The certificate bundle: this workplace reaches the npm registry (and
# other HTTPS hosts) through a TLS proxy whose CA is in the host's
# /etc/ssl/certs/ca-certificates.crt, so that bundle is copied into the
# container and named by NODE_EXTRA_CA_CERTS and npm's cafile. That is the
# workplace's condition, not the product's: a machine that reaches the
# registry directly needs neither. IMC_SLIM_CA= (empty) leaves it out.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
name=${IMC_SLIM_NAME:-imc-slim-make-test}
image=${IMC_BASE_IMAGE:-docker.io/library/debian:bookworm-slim}
rev=${IMC_SLIM_REV:-HEAD}
log=${IMC_SLIM_LOG:-/var/tmp/imc-slim-make-test.log}
store=${IMC_SLIM_STORE:-/var/tmp/$name-store}
ca=${IMC_SLIM_CA-/etc/ssl/certs/ca-certificates.crt}
nice=${IMC_SLIM_NICE:-0}
podman=(podman --runtime runc --cgroup-manager cgroupfs)
inside_ca=/usr/local/share/imc-workplace-ca.pem
checkout=/root/mod_imchallenge

# Runs a bash script in the container, in the clone, with the CA's settings.
in_container() {
    local env=()
    if [ -n "$ca" ]; then
        env+=(-e "NODE_EXTRA_CA_CERTS=$inside_ca" -e "npm_config_cafile=$inside_ca")
    fi
    "${podman[@]}" exec "${env[@]}" -w "$checkout" "$name" \
        nice -n "$nice" bash -c "$1"
}

step_start() {
    IMC_BASE_IMAGE=$image bash "$here/base-image.sh"
    "${podman[@]}" rm -f -t 0 "$name" >/dev/null 2>&1 || true
    rm -rf "$store"
    mkdir -p "$store"
    "${podman[@]}" run -d --name "$name" --hostname "$name" --privileged \
        --network host --ulimit nofile=16384:16384 --ulimit nproc=4096:4096 \
        --shm-size 1g -v "$store:/var/lib/containers" \
        "$image" sleep infinity >/dev/null
    if [ -n "$ca" ]; then
        "${podman[@]}" cp "$ca" "$name:$inside_ca"
    fi
    # git to clone, make to start make test; nothing else by hand.
    "${podman[@]}" exec -e DEBIAN_FRONTEND=noninteractive "$name" bash -c '
        set -e
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends git make >/dev/null'
    echo "container $name: started from $image"
}

step_clone() {
    local bundle commit
    bundle=$(mktemp -d /var/tmp/imc-slim-bundle.XXXXXX)
    git -C "$repo" bundle create -q "$bundle/repo.bundle" "$rev"
    commit=$(git -C "$repo" rev-parse "$rev")
    "${podman[@]}" cp "$bundle/repo.bundle" "$name:/root/repo.bundle"
    rm -rf "$bundle"
    "${podman[@]}" exec "$name" bash -c '
        set -e
        rm -rf '"$checkout"'
        git -c advice.detachedHead=false clone -q /root/repo.bundle '"$checkout"'
        cd '"$checkout"'
        git -c advice.detachedHead=false checkout -q '"$commit"'
        echo "container '"$name"': clone at $(git log -1 --format="%h %s")"'
}

step_prepare() {
    in_container 'make test TEST_SUITES='
}

step_test() {
    local status=0
    echo "container $name: CI=true make test (log: $log)"
    in_container 'CI=true make test' >"$log" 2>&1 || status=$?
    sed -n '/^==== summary/,$p' "$log"
    [ $status -eq 0 ] || echo "container $name: make test exited $status (log: $log)"
    return $status
}

step_rm() {
    "${podman[@]}" rm -f -t 0 "$name" >/dev/null 2>&1 || true
    rm -rf "$store"
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(start clone test rm)
status=0
for s in "${steps[@]}"; do
    case $s in
        start | clone | prepare | test | rm) "step_$s" || status=$? ;;
        *)
            echo "slim-make-test: unknown step '$s'" >&2
            exit 2
            ;;
    esac
    [ $status -eq 0 ] || break
done
exit $status
