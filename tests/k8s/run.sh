#!/usr/bin/env bash
# Licensed under the Apache License, Version 2.0.
#
# make test-k8s: yamllint, then offline validation of kubernetes/ with the
# npm packages kubernetes-models and yaml, installed here into
# tests/k8s/node_modules (ignored by git) when missing or out of date.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

yamllint -s -c yamllint.yaml ../../kubernetes
echo "yamllint: kubernetes/ clean"

if [ ! -f node_modules/.package-lock.json ] ||
   [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
node --test validate.test.mjs
