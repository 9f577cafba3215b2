#!/usr/bin/env bash
# Licensed under the Apache License, Version 2.0.
#
# Installs what building, running, testing and benchmarking mod_imchallenge
# need, and only what is missing.
#
#   bash tests/install-deps.sh [GROUP...]     (default: build test)
#
# Groups: build (the module), test (unit, integration, fuzz, valgrind, ASan),
# cluster (ZooKeeper), browser (Chromium + Selenium), docker (podman and the
# base image's tools), k8s (yamllint, Node.js + npm), bench (wrk, h2load),
# all (every group).
#
# Every tool is checked on its own, by what the tests use (a command on
# PATH, a module of /usr/bin/python3, a pkg-config name, a file), and its
# Debian package is installed only when that check fails. A tool that is
# present from elsewhere (the machine's Node.js and npm, a browser, another
# Python) is used as it is and never replaced: asking apt for Debian's npm
# next to a Node.js from another source makes apt refuse the whole request.
# Each line printed says where a tool came from: "present" (with its path)
# or "installed" (with its package).
#
# A tool whose package would bring what the tests must not have is taken
# out of its .deb instead (`deb:PACKAGE:FILE` in the table): promtool comes
# from Debian's prometheus package, whose post-install starts a Prometheus
# server; only /usr/bin/promtool is copied, to $IMC_TOOLS_DIR/bin
# (default /opt/imchallenge-tools/bin), where the tests look for it.
#
# IMC_DEPS_DRY_RUN=1 prints what would be installed and changes nothing.
set -euo pipefail

py=/usr/bin/python3
tools_dir=${IMC_TOOLS_DIR:-/opt/imchallenge-tools}

# One tool a line: group | name | check (a shell command, run with `eval`) |
# the Debian packages that provide it.
read -r -d '' TOOLS <<'EOF' || true
build | make | command -v make | make
build | cc | command -v gcc | gcc libc6-dev
build | apxs | command -v apxs | apache2-dev
build | apache2 | test -x /usr/sbin/apache2 | apache2
build | jansson | pkg-config --exists jansson | libjansson-dev pkg-config
build | libcurl | pkg-config --exists libcurl | libcurl4-openssl-dev pkg-config
build | apr | pkg-config --exists apr-1 apr-util-1 | libapr1-dev libaprutil1-dev pkg-config
test | clickhouse | clickhouse_server | clickhouse-server clickhouse-client
test | tzdata | test -f /usr/share/zoneinfo/Europe/Berlin | tzdata
test | check | pkg-config --exists check | check pkg-config
test | valgrind | command -v valgrind | valgrind
test | clang | command -v clang | clang
test | libfuzzer | clang_rt libclang_rt.fuzzer | libclang-rt-14-dev
test | curl | command -v curl | curl
test | openssl | command -v openssl | openssl
test | pytest | $py -c 'import pytest' | python3-pytest
test | requests | $py -c 'import requests' | python3-requests
test | promtool | promtool_binary | deb:prometheus:usr/bin/promtool
cluster | zookeeper | test -f /usr/share/java/zookeeper.jar | zookeeper
cluster | java | command -v java | default-jre-headless
browser | chromium | browser_binary | chromium
browser | chromedriver | driver_binary | chromium-driver
browser | selenium | $py -c 'import selenium' | python3-selenium
docker | podman | command -v podman | podman uidmap slirp4netns fuse-overlayfs
docker | runc | command -v runc | runc
docker | debootstrap | command -v debootstrap | debootstrap
docker | pyyaml | $py -c 'import yaml' | python3-yaml
k8s | yamllint | command -v yamllint | yamllint
k8s | node | command -v node | nodejs
k8s | npm | command -v npm | npm
bench | wrk | command -v wrk | wrk
bench | h2load | command -v h2load | nghttp2-client
EOF

clickhouse_server() {
    local p
    for p in /usr/bin/clickhouse-server /usr/sbin/clickhouse-server /usr/bin/clickhouse; do
        [ -x "$p" ] && return 0
    done
    return 1
}

# A clang runtime library of the installed clang ($1: its name stem).
clang_rt() {
    command -v clang >/dev/null || return 1
    local f
    f=$(clang -print-file-name="$1-x86_64.a" 2>/dev/null) || return 1
    [ -f "$f" ] || f=$(dirname "$f")/$(basename "$f" -x86_64.a).a
    [ -f "$f" ]
}

# The browser and its driver: Debian's paths, which the browser tests use,
# or IMC_CHROMIUM / IMC_CHROMEDRIVER when the machine has them elsewhere.
browser_binary() { test -x "${IMC_CHROMIUM:-/usr/bin/chromium}"; }
driver_binary() { test -x "${IMC_CHROMEDRIVER:-/usr/bin/chromedriver}"; }

# promtool: $IMC_PROMTOOL when set, else the one taken out of the .deb,
# else one on PATH (tests/integration/test_observe.py looks the same way).
promtool_path() {
    if [ -n "${IMC_PROMTOOL:-}" ]; then
        echo "$IMC_PROMTOOL"
    elif [ -x "$tools_dir/bin/promtool" ]; then
        echo "$tools_dir/bin/promtool"
    else
        command -v promtool
    fi
}
promtool_binary() {
    local p
    p=$(promtool_path) && test -x "$p"
}

# Copies FILE of the Debian package PACKAGE into $tools_dir/bin, without
# installing the package (none of its scripts run).
deb_extract() {
    local pkg=$1 file=$2 tmp
    tmp=$(mktemp -d)
    # apt downloads as _apt where that user may write.
    chmod 755 "$tmp"
    chown _apt "$tmp" 2>/dev/null || true
    if (cd "$tmp" && apt-get download -qq "$pkg" >/dev/null) &&
        dpkg-deb -x "$tmp"/"$pkg"_*.deb "$tmp/root" &&
        install -D -m 755 "$tmp/root/$file" "$tools_dir/bin/${file##*/}"; then
        rm -rf "$tmp"
        return 0
    fi
    rm -rf "$tmp"
    return 1
}

# Where a present tool is: the path of its command, or the file tested.
where() {
    case $1 in
        command) command -v "$3" ;;
        test) echo "${@: -1}" ;;
        promtool_binary) promtool_path ;;
        *) echo "checked" ;;
    esac
}

groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(build test)
for g in "${groups[@]}"; do
    case $g in
        all) groups=(build test cluster browser docker k8s bench) ;;
        build | test | cluster | browser | docker | k8s | bench) ;;
        *)
            echo "install-deps: unknown group '$g'" >&2
            exit 2
            ;;
    esac
done

declare -a names=() packages=() extracts=()
declare -A wanted=()
for g in "${groups[@]}"; do wanted[$g]=1; done
while IFS='|' read -r group name check pkgs; do
    group=${group// /} name=${name// /}
    [ -n "$group" ] && [ -n "${wanted[$group]:-}" ] || continue
    if eval "$check" >/dev/null 2>&1; then
        printf '  %-13s present (%s)\n' "$name" "$(where $check)"
    else
        names+=("$name")
        pkgs=${pkgs# }
        if [ "${pkgs#deb:}" != "$pkgs" ]; then
            extracts+=("${pkgs#deb:}")
            continue
        fi
        # shellcheck disable=SC2206
        packages+=($pkgs)
    fi
done <<<"$TOOLS"

[ ${#names[@]} -gt 0 ] || exit 0
# Several tools may share a package (pkg-config): ask for each once.
[ ${#packages[@]} -eq 0 ] ||
    mapfile -t packages < <(printf '%s\n' "${packages[@]}" | awk '!seen[$0]++')
plan=()
[ ${#packages[@]} -eq 0 ] || plan+=("apt-get install ${packages[*]}")
[ ${#extracts[@]} -eq 0 ] || plan+=("take out of .debs into $tools_dir/bin: ${extracts[*]}")
echo "install-deps: missing ${names[*]}: $(IFS=';'; echo "${plan[*]}" | sed 's/;/; /g')"
[ -z "${IMC_DEPS_DRY_RUN:-}" ] || exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install-deps: run as root to install them" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() {
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
# The package lists are refreshed once per run, before the first install.
apt-get update -qq
# Java's post-install scripts fail where the manual-page directory is
# missing, as in slim container images that drop manual pages.
mkdir -p /usr/share/man/man1
if [ ${#packages[@]} -gt 0 ] && ! apt_install "${packages[@]}"; then
    # One refused package must not keep the others out: try each alone and
    # name the ones that still fail.
    failed=()
    for p in "${packages[@]}"; do
        apt_install "$p" || failed+=("$p")
    done
    if [ ${#failed[@]} -gt 0 ]; then
        echo "install-deps: apt-get could not install: ${failed[*]}" >&2
        exit 1
    fi
fi
for p in "${packages[@]}"; do
    printf '  %-13s installed (Debian package)\n' "$p"
done
for e in "${extracts[@]}"; do
    if ! deb_extract "${e%%:*}" "${e#*:}"; then
        echo "install-deps: could not take ${e#*:} out of ${e%%:*}'s .deb" >&2
        exit 1
    fi
    printf '  %-13s installed (%s, from the .deb of %s)\n' "${e##*/}" \
        "$tools_dir/bin/${e##*/}" "${e%%:*}"
done
