#!/usr/bin/env bash
# Installs, from Debian's packages, what building, running and testing
# mod_imchallenge needs, and only what is missing.
set -euo pipefail

packages=(
    apache2 apache2-dev libjansson-dev libcurl4-openssl-dev pkg-config
    clickhouse-server clickhouse-client tzdata zookeeper
    check valgrind clang libclang-rt-14-dev
    python3-pytest python3-requests python3-selenium chromium chromium-driver
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
        missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing packages: ${missing[*]} (run as root to install)" >&2
        exit 1
    fi
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
