#!/usr/bin/env bash
# THE run command: installs the Debian packages, builds build/tollgate and runs a whole local
# cluster in the foreground:
#   - a control plane with its embedded PostgreSQL, state in ./tollgate-data;
#   - one data plane, enrolled with a join token (`tollgate cp token create`, then
#     `tollgate dp join 127.0.0.1:8005 --token ... --start`), state in ./tollgate-data/dp1;
#   - a local httpbin-like upstream (scripts/demo-upstream.py: /anything, /get, /headers,
#     /status/N ...), since the tutorials' httpbin.konghq.com may be out of reach;
# waits until the data plane is connected, then prints Kong's tutorial commands to try.
# Ctrl-C (or any failure) stops everything it started.
#
# Usage: bash scripts/demo.sh [--no-install] [--no-build]
#
# Knobs (environment):
#   TOLLGATE_PREFIX               control plane state (default ./tollgate-data)
#   TOLLGATE_DEMO_DP_PREFIX       data plane state (default $TOLLGATE_PREFIX/dp1)
#   TOLLGATE_DEMO_ADMIN_PORT      Admin API, http (8001)     TOLLGATE_DEMO_ADMIN_SSL_PORT (8444)
#   TOLLGATE_DEMO_CLUSTER_PORT    join and sync (8005)       TOLLGATE_DEMO_CP_STATUS_PORT (8100)
#   TOLLGATE_DEMO_PROXY_PORT      proxy, http (8000)         TOLLGATE_DEMO_PROXY_SSL_PORT (8443)
#   TOLLGATE_DEMO_DP_STATUS_PORT  data plane status (8101)   TOLLGATE_DEMO_UPSTREAM_PORT (8080)
#   TOLLGATE_BIN                  the binary to run (default build/tollgate)
#   any other TOLLGATE_* key of lib/config.def, e.g. TOLLGATE_PG_HOST to use an existing
#   PostgreSQL instead of the embedded one. Every listener is on 127.0.0.1.
set -euo pipefail

install=1 build=1
for arg in "$@"; do
  case "$arg" in
    --no-install) install=0 ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PREFIX=$(realpath -m "${TOLLGATE_PREFIX:-./tollgate-data}")
DP_PREFIX=$(realpath -m "${TOLLGATE_DEMO_DP_PREFIX:-$PREFIX/dp1}")
ADMIN_PORT=${TOLLGATE_DEMO_ADMIN_PORT:-8001}
ADMIN_SSL_PORT=${TOLLGATE_DEMO_ADMIN_SSL_PORT:-8444}
CLUSTER_PORT=${TOLLGATE_DEMO_CLUSTER_PORT:-8005}
CP_STATUS_PORT=${TOLLGATE_DEMO_CP_STATUS_PORT:-8100}
PROXY_PORT=${TOLLGATE_DEMO_PROXY_PORT:-8000}
PROXY_SSL_PORT=${TOLLGATE_DEMO_PROXY_SSL_PORT:-8443}
DP_STATUS_PORT=${TOLLGATE_DEMO_DP_STATUS_PORT:-8101}
UPSTREAM_PORT=${TOLLGATE_DEMO_UPSTREAM_PORT:-8080}
BIN=$(realpath -m "${TOLLGATE_BIN:-build/tollgate}")
ADMIN=http://localhost:$ADMIN_PORT
PROXY=http://localhost:$PROXY_PORT
UPSTREAM=http://127.0.0.1:$UPSTREAM_PORT
LOGS=$PREFIX/logs

if [ "$install" = 1 ]; then
  echo "==== installing dependencies"
  if [ "$(id -u)" -eq 0 ]; then
    bash scripts/install-deps.sh
  elif command -v sudo >/dev/null; then
    sudo bash scripts/install-deps.sh
  else
    echo "not root and no sudo: assuming the packages of scripts/install-deps.sh are installed"
  fi
fi
if [ "$build" = 1 ]; then
  echo "==== building build/tollgate"
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j "$(nproc)"
fi
if [ ! -x "$BIN" ]; then
  echo "demo.sh: $BIN is not an executable (build it, or drop --no-build)" >&2
  exit 1
fi

# Say which port is taken, and by which knob it moves, rather than fail obscurely later.
for knob in ADMIN_PORT ADMIN_SSL_PORT CLUSTER_PORT CP_STATUS_PORT PROXY_PORT PROXY_SSL_PORT \
            DP_STATUS_PORT UPSTREAM_PORT; do
  port=${!knob}
  if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
    echo "demo.sh: port $port is already in use (another Tollgate or Kong?); stop it, or move" \
         "this listener with TOLLGATE_DEMO_$knob=<port>" >&2
    exit 1
  fi
done

mkdir -p "$PREFIX" "$DP_PREFIX" "$LOGS"
pids=() names=()

# Stops what was started, last first, each with SIGTERM and a bounded wait: the data plane
# finishes its requests, the control plane stops its embedded PostgreSQL.
stop_all() {
  trap '' INT TERM HUP
  local rc=0 i pid
  [ "${#pids[@]}" -gt 0 ] || return 0
  echo
  echo "==== stopping the demo"
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[$i]}
    kill -0 "$pid" 2>/dev/null || continue
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "${names[$i]} did not stop within 30 s: killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      rc=1
    fi
    wait "$pid" 2>/dev/null || true
    echo "stopped ${names[$i]}"
  done
  pids=()
  return $rc
}
finish() {
  local rc=$?
  stop_all || rc=1
  exit "$rc"
}
trap finish EXIT
trap 'exit 0' INT TERM HUP   # Ctrl-C: a normal end; the EXIT trap stops everything

# Each process runs in its own session: Ctrl-C reaches only this script, which then stops
# them in order. Their output goes to $LOGS.
start() { # name log command...
  local name=$1 log=$2
  shift 2
  setsid "$@" >>"$log" 2>&1 </dev/null &
  pids+=($!) names+=("$name")
}

fail() { # message log
  echo "demo.sh: $1; the end of $2:" >&2
  tail -n 30 "$2" >&2 || true
  exit 1
}

# Only what we set below reaches the planes' listeners; the rest of TOLLGATE_* passes through.
cp_env=(env -u TOLLGATE_DECLARATIVE_CONFIG TOLLGATE_PREFIX="$PREFIX"
        TOLLGATE_ADMIN_LISTEN="127.0.0.1:$ADMIN_PORT, 127.0.0.1:$ADMIN_SSL_PORT ssl"
        TOLLGATE_STATUS_LISTEN="127.0.0.1:$CP_STATUS_PORT"
        TOLLGATE_CLUSTER_LISTEN="127.0.0.1:$CLUSTER_PORT")
dp_env=(env -u TOLLGATE_DECLARATIVE_CONFIG -u TOLLGATE_CLUSTER_CONTROL_PLANE
        TOLLGATE_PREFIX="$DP_PREFIX"
        TOLLGATE_PROXY_LISTEN="127.0.0.1:$PROXY_PORT, 127.0.0.1:$PROXY_SSL_PORT ssl"
        TOLLGATE_STATUS_LISTEN="127.0.0.1:$DP_STATUS_PORT")

echo "==== starting the demo upstream on $UPSTREAM (scripts/demo-upstream.py)"
start "the demo upstream" "$LOGS/upstream.log" \
  python3 scripts/demo-upstream.py --host 127.0.0.1 --port "$UPSTREAM_PORT"

echo "==== starting the control plane (state in $PREFIX, log $LOGS/cp.log)"
start "the control plane" "$LOGS/cp.log" "${cp_env[@]}" "$BIN" cp start
cp_pid=${pids[-1]}
for _ in $(seq 900); do
  kill -0 "$cp_pid" 2>/dev/null || break
  curl -fs -o /dev/null "$ADMIN/status" && break
  sleep 0.2
done
curl -fs -o /dev/null "$ADMIN/status" || fail "the control plane did not come up" "$LOGS/cp.log"
curl -fs -o /dev/null "$UPSTREAM/" || fail "the demo upstream did not come up" "$LOGS/upstream.log"

echo "==== enrolling a data plane (state in $DP_PREFIX, log $LOGS/dp1.log)"
token_out=$("${cp_env[@]}" "$BIN" cp token create --uses 1 --ttl 1h 2>>"$LOGS/cp.log") ||
  fail "tollgate cp token create failed" "$LOGS/cp.log"
token=$(sed -n 1p <<<"$token_out")
ca_hash=$(sed -n 2p <<<"$token_out" | sed -n 's/.*--ca-hash \([^ ]*\).*/\1/p')
echo "tollgate dp join 127.0.0.1:$CLUSTER_PORT --token ${token%%.*}.**** --ca-hash $ca_hash --start"
start "the data plane" "$LOGS/dp1.log" "${dp_env[@]}" "$BIN" dp join "127.0.0.1:$CLUSTER_PORT" \
  --token "$token" --ca-hash "$ca_hash" --start
dp_pid=${pids[-1]}

# Ready when its control socket says it is connected to the control plane.
dp_connected() {
  "${dp_env[@]}" "$BIN" status --json --timeout 5 2>/dev/null |
    python3 -c 'import json,sys; sys.exit(0 if (json.load(sys.stdin).get("control_plane") or {}).get("connected") else 1)' 2>/dev/null
}
for _ in $(seq 600); do
  kill -0 "$dp_pid" 2>/dev/null || fail "the data plane exited" "$LOGS/dp1.log"
  dp_connected && break
  sleep 0.2
done
dp_connected || fail "the data plane did not connect to the control plane" "$LOGS/dp1.log"

cat <<EOF

Tollgate is running: Admin API $ADMIN, proxy $PROXY, demo upstream $UPSTREAM
State and logs under $PREFIX. In another terminal, follow Kong's tutorials; the tutorials'
httpbin is the demo upstream here:

  curl -i $ADMIN/
  curl -i -X POST $ADMIN/services \\
    --data name=example_service --data url=$UPSTREAM/anything
  curl -i -X POST $ADMIN/services/example_service/routes \\
    --data name=mocking --data 'paths[]=/mock'
  curl -i $PROXY/mock/request                       # 200, echoed by the upstream

Key authentication (Kong's "Configure key authentication"):

  curl -X POST $ADMIN/routes/mocking/plugins --data name=key-auth
  curl -i $PROXY/mock                               # 401 No API key found in request
  curl -i -X POST $ADMIN/consumers/ --data username=consumer --data custom_id=consumer
  curl -i -X POST $ADMIN/consumers/consumer/key-auth --data key=apikey
  curl -i $PROXY/mock/request -H 'apikey:apikey'    # 200, X-Consumer-Username: consumer
  curl -i $ADMIN/routes/mocking/plugins/

Consumers (Kong's "Adding Consumers"), on a route matched by Host:

  curl -i -X POST $ADMIN/services/example_service/routes \\
    --data name=example-host --data 'hosts[]=example.com'
  curl -X POST $ADMIN/routes/example-host/plugins --data name=key-auth
  curl -i -X POST --url $ADMIN/consumers/ --data "username=Jason"
  curl -i -X POST --url $ADMIN/consumers/Jason/key-auth/ --data 'key=ENTER_KEY_HERE'
  curl -i -X GET --url $PROXY --header "Host: example.com" --header "apikey: ENTER_KEY_HERE"

Rate limiting, then look at both planes through their control sockets:

  curl -X POST $ADMIN/routes/mocking/plugins --data name=rate-limiting --data config.minute=5
  for i in 1 2 3 4 5 6; do curl -s -o /dev/null -w '%{http_code}\\n' $PROXY/mock/request -H 'apikey:apikey'; done
  TOLLGATE_PREFIX=$PREFIX $BIN status
  TOLLGATE_PREFIX=$DP_PREFIX $BIN status

Press Ctrl-C to stop the data plane, the control plane (and its PostgreSQL) and the upstream.
EOF

# Until Ctrl-C, or until one of them dies (then stop the others and say so).
while :; do
  for i in "${!pids[@]}"; do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      rc=0
      wait "${pids[$i]}" || rc=$?
      echo "demo.sh: ${names[$i]} exited (status $rc); stopping the rest" >&2
      exit 1
    fi
  done
  sleep 1 &
  wait $! || true
done
