#!/usr/bin/env bash
# One command from a fresh clone to a running cluster:
#
#   deploy/up.sh            build the images locally (first run: debootstrap, needs root),
#                           create deploy/.env once, then `compose up -d` and wait for health
#   deploy/up.sh --no-build the same with the images already built
#
# deploy/.env holds this cluster's secrets (mode 0600): the database password, the keyring
# key every CP shares (it seals the cluster CA and key-auth keys: back it up, losing it makes
# both unreadable) and the bootstrap token DPs enrol with. It is created only when missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
env_file="$here/.env"
build=1
case "${1:-}" in
  --no-build) build=0 ;;
  "") ;;
  *) echo "usage: deploy/up.sh [--no-build]" >&2; exit 2 ;;
esac

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  echo "up.sh: neither 'docker compose' nor 'docker-compose' is installed" >&2
  exit 1
fi

rand() { # N ALPHABET
  LC_ALL=C tr -dc "$2" </dev/urandom | head -c "$1" || true
}

if [ ! -s "$env_file" ]; then
  umask 077
  {
    echo "# Written once by deploy/up.sh: this cluster's secrets. Keep it private; back it up."
    echo "COMPOSE_PROJECT_NAME=tollgate"
    echo "TOLLGATE_PG_PASSWORD=$(rand 32 'A-Za-z0-9')"
    echo "TOLLGATE_KEYRING_KEY=$(head -c 32 /dev/urandom | base64)"
    echo "TOLLGATE_BOOTSTRAP_TOKEN=$(rand 6 'a-z0-9').$(rand 16 'a-z0-9')"
  } >"$env_file"
  echo "created $env_file"
fi

[ "$build" = 1 ] && "$here/build-images.sh"

"${compose[@]}" --env-file "$env_file" -f "$here/docker-compose.yml" up -d

# Compose v1 has no --wait: poll the health checks (bounded) so the script returns when the
# cluster serves, or fails with the unhealthy services' logs.
deadline=$((SECONDS + 300))
while :; do
  pending=()
  for id in $("${compose[@]}" --env-file "$env_file" -f "$here/docker-compose.yml" ps -q); do
    state="$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")"
    case "$state" in healthy|running) ;; *) pending+=("$(docker inspect -f '{{.Name}}' "$id")=$state") ;; esac
  done
  [ ${#pending[@]} -eq 0 ] && break
  if [ $SECONDS -ge $deadline ]; then
    echo "up.sh: not healthy after 300 s: ${pending[*]}" >&2
    "${compose[@]}" --env-file "$env_file" -f "$here/docker-compose.yml" logs --tail 40 >&2
    exit 1
  fi
  sleep 2
done

where() { # SERVICE PORT: the published address, as compose reports it
  "${compose[@]}" --env-file "$env_file" -f "$here/docker-compose.yml" port "$1" "$2" 2>/dev/null
}
echo "Tollgate is up."
echo "  Admin API   cp1 http://$(where cp1 8001)   cp2 http://$(where cp2 8001)   (loopback only)"
echo "  Proxies     dp1 $(where dp1 8000)   dp2 $(where dp2 8000)   dp3 $(where dp3 8000)"
echo "  DP status   dp1 http://$(where dp1 8100)/status   (dp2 $(where dp2 8100), dp3 $(where dp3 8100))"
echo "Routes can point at the demo upstream http://echo:8080. See deploy/README.md."
