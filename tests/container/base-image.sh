#!/usr/bin/env bash
# Licensed under the Apache License, Version 2.0.
#
# Makes sure podman's store holds the base image of docker/Dockerfile,
# docker.io/library/debian:bookworm-slim. It is pulled when a registry is
# reachable; otherwise it is made here: `debootstrap --variant=minbase
# bookworm` from the Debian mirror this machine's apt uses, trimmed like the
# official slim image, and `podman import`ed under the same name. An image
# already in the store is kept (delete it to force a rebuild).
set -euo pipefail

image=${IMC_BASE_IMAGE:-docker.io/library/debian:bookworm-slim}
suite=bookworm
podman=(podman --runtime runc --cgroup-manager cgroupfs)

if "${podman[@]}" image exists "$image"; then
    echo "base image $image: present"
    exit 0
fi
if timeout 120 "${podman[@]}" pull -q "$image" >/dev/null 2>&1; then
    echo "base image $image: pulled"
    exit 0
fi

# The URI of the first apt source (one-line or deb822 format) whose suites
# include $1, e.g. "bookworm" or "bookworm-security".
apt_uri() {
    local want=$1 f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
             /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v want="$want" '
            /^[ \t]*#/ { next }
            $1 == "deb" {
                i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                if ($(i + 1) == want) { print $i; exit }
                next
            }
            /^URIs:/   { uri = $2 }
            /^Suites:/ { for (j = 2; j <= NF; j++) if ($j == want) found = 1 }
            /^Types:/  { types = $0 }
            /^[ \t]*$/ { if (found && uri != "" && types ~ /deb( |$)/) { print uri; exit }
                         uri = ""; found = 0; types = "" }
            END        { if (found && uri != "" && types ~ /deb( |$)/) print uri }
        ' "$f" | head -n 1
    done | head -n 1
}

mirror=$(apt_uri "$suite")
mirror=${mirror:-http://deb.debian.org/debian}
security=$(apt_uri "$suite-security")
command -v debootstrap >/dev/null || {
    echo "debootstrap is missing (apt-get install debootstrap)" >&2
    exit 1
}

work=$(mktemp -d /var/tmp/imc-base-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
echo "base image $image: debootstrap $suite from $mirror"
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/log" 2>&1 || {
    tail -n 30 "$work/log" >&2
    exit 1
}

# The same sources as the official image: the release, its updates and,
# when this machine uses one, the security archive.
rm -f "$root/etc/apt/sources.list"
{
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' \
        "$mirror" "$suite" "$suite"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    if [ -n "$security" ]; then
        printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\n' "$security" "$suite"
        printf 'Components: main\n'
        printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    fi
} >"$root/etc/apt/sources.list.d/debian.sources"

# Trimmed like the slim image: no documentation, manual pages or
# translations now or in later installs; no package lists or caches.
cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'CFG'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CFG
find "$root/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
       "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
       "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log \
       "$root"/var/log/apt/* "$root"/tmp/* "$root"/dev/*
: >"$root/etc/hostname"
: >"$root/etc/resolv.conf"

tar --numeric-owner -C "$root" -c . |
    "${podman[@]}" import -q --change 'CMD ["bash"]' - "$image" >/dev/null
echo "base image $image: imported ($("${podman[@]}" image inspect \
    --format '{{.Size}}' "$image") bytes)"
