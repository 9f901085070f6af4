#!/usr/bin/env bash
# Installs every Debian 12 package that building, testing and running the demo need.
# Idempotent: packages already present are skipped by apt-get. Must run as root.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config clang clang-format libclang-rt-14-dev
  libuv1-dev libssl-dev libpq-dev libjansson-dev libyaml-dev libpcre2-dev
  liblmdb-dev libwebsockets-dev libwebsockets-evlib-uv libprotobuf-c-dev protobuf-c-compiler protobuf-compiler python3-protobuf libnng-dev
  libcmocka-dev
  postgresql postgresql-contrib
  python3 python3-pytest python3-requests python3-psycopg2 python3-matplotlib
  curl procps iproute2 wrk nginx-light haproxy
  debootstrap  # deploy/build-base-image.sh: the Debian base of the compose images (no registry)
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
