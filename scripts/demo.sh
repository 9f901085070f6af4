#!/usr/bin/env bash
# THE run command: installs the Debian packages, builds build/tollgate, and runs the control
# plane in the foreground with its state (and an embedded PostgreSQL) in ./tollgate-data,
# then prints the Kong tutorial's commands to try. Ctrl-C stops everything cleanly.
#
# Knobs: TOLLGATE_PREFIX (default ./tollgate-data); any other TOLLGATE_* key from
# lib/config.def, e.g. TOLLGATE_PG_HOST to use an existing PostgreSQL instead.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export TOLLGATE_PREFIX=${TOLLGATE_PREFIX:-./tollgate-data}
ADMIN=http://localhost:8001

echo "==== installing dependencies"
if [ "$(id -u)" -eq 0 ]; then
  bash scripts/install-deps.sh
elif command -v sudo >/dev/null; then
  sudo bash scripts/install-deps.sh
else
  echo "not root and no sudo: assuming the packages of scripts/install-deps.sh are installed"
fi

echo "==== building build/tollgate"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc)"

# The default listeners (lib/config.def): say which one is taken rather than fail obscurely.
for port in 8001 8444 8100 8005; do
  if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
    echo "port $port is already in use (another Tollgate or Kong?); stop it and retry" >&2
    exit 1
  fi
done

# The CP runs in its own session so that Ctrl-C reaches only this script, which then stops
# the CP once, with SIGTERM; the CP stops its embedded PostgreSQL before it exits.
echo "==== starting the control plane (state in $TOLLGATE_PREFIX)"
setsid build/tollgate cp start &
CP_PID=$!

stop() {
  trap '' INT TERM HUP
  echo
  echo "==== stopping Tollgate"
  kill -TERM "$CP_PID" 2>/dev/null || true
  local rc=0
  wait "$CP_PID" || rc=$?
  echo "==== stopped (exit $rc)"
  exit "$rc"
}
trap stop INT TERM HUP

for _ in $(seq 900); do
  kill -0 "$CP_PID" 2>/dev/null || break
  curl -fs -o /dev/null "$ADMIN/status" && break
  sleep 0.2
done
if ! curl -fs -o /dev/null "$ADMIN/status"; then
  echo "the control plane did not come up; its log is above" >&2
  kill -TERM "$CP_PID" 2>/dev/null || true
  wait "$CP_PID" || true
  exit 1
fi

cat <<EOF

Tollgate is running. Admin API: $ADMIN   state: $TOLLGATE_PREFIX
In another terminal, follow Kong's getting-started tutorial:

  curl -i $ADMIN/
  curl -i -X POST $ADMIN/services \\
    --data name=example_service --data url=http://httpbin.konghq.com
  curl -i -X POST $ADMIN/services/example_service/routes \\
    --data name=mocking --data 'paths[]=/mock'
  curl -i -X POST $ADMIN/routes/mocking/plugins --data name=key-auth
  curl -i -X POST $ADMIN/consumers/ --data username=consumer --data custom_id=consumer
  curl -i -X POST $ADMIN/consumers/consumer/key-auth --data key=apikey
  curl -i $ADMIN/consumers/consumer/key-auth
  curl -i $ADMIN/routes/mocking/plugins/

Through the proxy, once a data plane is running (port 8000):

  curl -i http://localhost:8000/mock/request                    # 401: no key
  curl -i http://localhost:8000/mock/request -H 'apikey:apikey'

Press Ctrl-C to stop Tollgate and its embedded PostgreSQL.
EOF

rc=0
wait "$CP_PID" || rc=$?
echo "==== the control plane exited (exit $rc)"
exit "$rc"
