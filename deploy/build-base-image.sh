#!/usr/bin/env bash
# Builds the Debian 12 (bookworm) base image every Tollgate image starts FROM, without
# pulling anything from a registry: debootstrap a minimal root filesystem from this
# machine's own Debian mirror, then `docker import` it.
#
# Idempotent: if the tag already exists the script does nothing (pass --rebuild to
# replace it). Must run as root (debootstrap needs it) on a host with a Docker engine.
#
#   deploy/build-base-image.sh [--rebuild] [--tag tollgate/debian:12] [--mirror URL]
#
# The mirror defaults to the first bookworm URI in /etc/apt/sources.list{,.d/*}, so a
# host behind an apt proxy or on a local mirror uses the same one; otherwise
# http://deb.debian.org/debian.
set -euo pipefail

TAG="${TOLLGATE_BASE_IMAGE:-tollgate/debian:12}"
SUITE=bookworm
MIRROR=""
REBUILD=0

while [ $# -gt 0 ]; do
  case "$1" in
    --rebuild) REBUILD=1 ;;
    --tag) TAG="$2"; shift ;;
    --mirror) MIRROR="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "build-base-image.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ "$REBUILD" = 0 ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "base image $TAG already exists (use --rebuild to replace it)"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "build-base-image.sh: debootstrap needs root" >&2
  exit 1
fi
command -v debootstrap >/dev/null || {
  echo "build-base-image.sh: debootstrap is not installed (apt-get install debootstrap)" >&2
  exit 1
}

# Finds the mirror serving $SUITE's main archive in the host's apt sources, in both the
# one-line format (deb URI SUITE ...) and the deb822 format (URIs:/Suites: stanzas).
# Security and third-party repositories are skipped: they do not carry the base suite.
host_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    # deb [options] URI SUITE COMPONENTS...: skip the bracketed options, if any.
    awk -v s="$SUITE" '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
         if ($(i+1) == s) { print $i; exit } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk -v s="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
      { uri = ""; ok = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { sub(/^URIs:[ \t]*/, "", $i); split($i, u, /[ \t]+/); uri = u[1] }
          if ($i ~ /^Suites:/) { n = split($i, w, /[ \t]+/); for (j = 2; j <= n; j++) if (w[j] == s) ok = 1 }
        }
        if (ok && uri != "") { print uri; exit } }' "$f"
  done
}

if [ -z "$MIRROR" ]; then
  MIRROR="$(host_mirror | head -n1)"
  MIRROR="${MIRROR:-http://deb.debian.org/debian}"
fi
# The security archive lives beside the main one on Debian's own hosts.
SECURITY="${MIRROR%/debian}/debian-security"

WORK="$(mktemp -d /tmp/tollgate-base.XXXXXX)"
cleanup() { rm -rf --one-file-system "$WORK"; }
trap cleanup EXIT

echo "debootstrap $SUITE from $MIRROR into $WORK (a few minutes the first time)"
debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$WORK/root" "$MIRROR" \
  >"$WORK/debootstrap.log" 2>&1 || {
  tail -n 30 "$WORK/debootstrap.log" >&2
  echo "build-base-image.sh: debootstrap failed (full log above)" >&2
  exit 1
}

root="$WORK/root"
cat >"$root/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb $SECURITY $SUITE-security main
SOURCES
# Same habits as Debian's official image: no recommends, no docs, no caches in layers.
cat >"$root/etc/apt/apt.conf.d/90tollgate" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
APT
cat >"$root/etc/dpkg/dpkg.cfg.d/90tollgate-nodoc" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
DPKG
# Services must not start while images are built.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/var/log/*.log "$root"/tmp/* "$root"/dev/*
# A container gets its own hostname and resolv.conf from the engine.
: >"$root/etc/hostname"
: >"$root/etc/resolv.conf"

tar --numeric-owner -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "debootstrap $SUITE from $MIRROR" - "$TAG" >/dev/null
echo "built base image $TAG"
