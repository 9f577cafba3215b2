#!/usr/bin/env bash
# Licensed under the Apache License, Version 2.0.
#
# make test-compat: the module's statements on ClickHouse 18.16, replayed
# on the ClickHouse engine of chDB (a current release) and compared.
#
#   1. npm ci of chdb into tests/compat/node_modules (ignored by git) when
#      missing or older than package-lock.json;
#   2. workload.py: a private ClickHouse 18.16 and httpd with the module,
#      a recording relay between them, a workload with known answers; the
#      capture goes to $COMPAT_CAPTURE (build/compat/capture.json);
#   3. replay.mjs: every captured statement on chDB, answers compared, then
#      the harness's self-test; ends with "compat: N passed, M failed".
#
# COMPAT_CAPTURE=file with COMPAT_REPLAY_ONLY=1 replays an earlier capture.
#
# package-lock.json lists chdb's optional libraries of other platforms
# (darwin, linux-arm64) by hand, without a tarball: they are not published,
# so npm leaves them out of a lock it writes, and npm ci then refuses that
# lock as out of sync. npm ci skips them here by their os/cpu fields. Keep
# those entries when the lock is written again.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
capture=${COMPAT_CAPTURE:-$repo/build/compat/capture.json}

cd "$here"
if [ ! -f node_modules/.package-lock.json ] ||
   [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi

if [ -z "${COMPAT_REPLAY_ONLY:-}" ]; then
    mkdir -p "$(dirname "$capture")"
    rm -f "$capture"
    ${PYTHON:-/usr/bin/python3} workload.py "$capture"
fi
node replay.mjs "$capture"
