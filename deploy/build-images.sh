#!/usr/bin/env bash
# Builds every image the compose cluster runs, locally (nothing is pulled from a registry):
#   tollgate/debian:12      the base (deploy/build-base-image.sh; kept once built)
#   tollgate/tollgate:TAG   control and data planes (deploy/Dockerfile, from this source tree)
#   tollgate/postgres:TAG   PostgreSQL 15 from Debian's package (deploy/postgres/)
#   tollgate/echo:TAG       the demo upstream (deploy/upstream/)
# TAG is $TOLLGATE_IMAGE_TAG, default "local". Re-running is cheap: Docker's layer cache keeps
# the package layers, and the compile layer is redone only when a source file changed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
tag="${TOLLGATE_IMAGE_TAG:-local}"
base="${TOLLGATE_BASE_IMAGE:-tollgate/debian:12}"
jobs="${TOLLGATE_BUILD_JOBS:-2}"

TOLLGATE_BASE_IMAGE="$base" "$here/build-base-image.sh"

# The context holds src/ (the source tree, minus what the build never reads) and deploy/.
# Staging it in a directory of our own means no .dockerignore is needed, a checkout full of
# build trees does not send gigabytes to the engine, and the Dockerfile copies all of the
# source in one layer (each instruction costs a container commit with the legacy builder).
stage_context() {
  local dir="$1" entry name
  mkdir -p "$dir/src"
  for entry in "$repo"/* "$repo"/.clang-format; do
    [ -e "$entry" ] || continue
    name="$(basename "$entry")"
    case "$name" in
      build*|tests|docs|deploy|scripts|.git|.ci) continue ;;
    esac
    cp -a "$entry" "$dir/src/"
  done
  mkdir -p "$dir/deploy"
  (cd "$repo/deploy" && tar -c --exclude=.env --exclude='*.md' .) | tar -x -C "$dir/deploy"
}

build() { # IMAGE DOCKERFILE
  echo "building $1"
  # The legacy builder prints every step; keep the output for a failure only.
  local log
  log="$(mktemp /tmp/tollgate-image-build.XXXXXX)"
  if ! docker build --build-arg "BASE_IMAGE=$base" --build-arg "BUILD_JOBS=$jobs" \
      -f "$ctx/$2" -t "$1" "$ctx" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    rm -f "$log"
    echo "build-images.sh: building $1 failed" >&2
    exit 1
  fi
  rm -f "$log"
}

ctx="$(mktemp -d /tmp/tollgate-context.XXXXXX)"
trap 'rm -rf "$ctx"' EXIT
stage_context "$ctx"

build "tollgate/postgres:$tag" deploy/postgres/Dockerfile
build "tollgate/echo:$tag" deploy/upstream/Dockerfile
build "tollgate/tollgate:$tag" deploy/Dockerfile
echo "images ready: tollgate/tollgate:$tag tollgate/postgres:$tag tollgate/echo:$tag"
