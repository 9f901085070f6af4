#!/usr/bin/env bash
# THE test command. From a fresh Debian 12 clone, as root:
#   1. installs the Debian packages (scripts/install-deps.sh),
#   2. configures and builds build/ (RelWithDebInfo) and build-asan/ (-DTG_SANITIZE=ON),
#   3. runs the unit tests (ctest) in both,
#   4. runs the integration tests (pytest, real processes) against build/tollgate, then the
#      tests marked `asan` against build-asan/tollgate,
#   5. builds the whole tree with clang as the README's fuzzing instructions do (build-fuzz/,
#      -DTG_FUZZ=ON) and runs each libFuzzer target for a fixed number of inputs from an
#      empty corpus and a fixed seed,
#   6. prints one line `N passed, N failed` (`, N skipped` when some were) summing all of it,
#      and exits non-zero if anything failed (a build failure counts as a failure).
# Everything runs with TMPDIR set to one private directory; on exit every process still
# running from there is stopped (by pid) and the directory removed.
#
# Knobs: TG_BUILD_DIR, TG_ASAN_BUILD_DIR (default build, build-asan), TG_JOBS (default nproc),
# TG_SKIP_ASAN=1 (skip the sanitizer build), TG_PYTEST_ARGS (extra pytest arguments),
# TG_FUZZ_BUILD_DIR (default build-fuzz), TG_FUZZ_RUNS (inputs per target, default 5000000,
# a few seconds each; 0 skips the fuzz step).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$(pwd)
BUILD=${TG_BUILD_DIR:-build}
ASAN_BUILD=${TG_ASAN_BUILD_DIR:-build-asan}
FUZZ_BUILD=${TG_FUZZ_BUILD_DIR:-build-fuzz}
FUZZ_RUNS=${TG_FUZZ_RUNS:-5000000}
JOBS=${TG_JOBS:-$(nproc)}
PY=/usr/bin/python3
PYTEST_TIMEOUT=1500 # seconds per pytest run; the harness bounds every wait, this is a backstop

RUN_TMP=$(mktemp -d "${TMPDIR:-/tmp}/tollgate-test.XXXXXX") || exit 2
chmod 0711 "$RUN_TMP" # the unprivileged PostgreSQL user must be able to reach into it
export TMPDIR=$RUN_TMP

# ---- cleanup -----------------------------------------------------------------------------
# Pids whose working directory or an argument lies under $1 (postgres chdirs into its data
# directory; our CPs run in their prefix).
pids_under() {
  local dir=$1 p pid cwd arg
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = "$$" ] && continue
    cwd=$(readlink "$p/cwd" 2>/dev/null) || cwd=
    if [[ $cwd == "$dir" || $cwd == "$dir"/* ]]; then
      echo "$pid"
      continue
    fi
    while IFS= read -r -d '' arg; do
      if [[ $arg == "$dir"/* ]]; then
        echo "$pid"
        break
      fi
    done 2>/dev/null <"$p/cmdline"
  done
}

cleanup() {
  local pids i
  pids=$(pids_under "$RUN_TMP")
  if [ -n "$pids" ]; then
    echo "stopping leftover processes: $(echo $pids)" >&2
    kill -TERM $pids 2>/dev/null
    for i in $(seq 50); do
      pids=$(pids_under "$RUN_TMP")
      [ -z "$pids" ] && break
      sleep 0.2
    done
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
  fi
  rm -rf "$RUN_TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- counting ----------------------------------------------------------------------------
PASSED=0 FAILED=0 SKIPPED=0
REPORT=()

# Adds the results of one junit XML (ctest or pytest) to the totals: "<label> <xml> <rc>".
# A run that failed without a failing test case in its XML still counts as one failure.
count_junit() {
  local label=$1 xml=$2 rc=$3 p=0 f=0 s=0
  if [ -s "$xml" ]; then
    read -r p f s < <("$PY" - "$xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET
p = f = s = 0
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    kids = {c.tag for c in case}
    skip = case.find("skipped")
    missing = skip is not None and skip.get("message", "").startswith("Unable to find")
    if kids & {"failure", "error"} or case.get("status") == "fail" or missing:
        f += 1
    elif "skipped" in kids or case.get("status") in ("notrun", "disabled"):
        s += 1
    else:
        p += 1
print(p, f, s)
EOF
    ) || { p=0 f=0 s=0; }
  fi
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    f=1
    label="$label (exit $rc)"
  fi
  PASSED=$((PASSED + p)) FAILED=$((FAILED + f)) SKIPPED=$((SKIPPED + s))
  REPORT+=("$(printf '%-36s %s passed, %s failed, %s skipped' "$label" "$p" "$f" "$s")")
}

fail_step() {
  FAILED=$((FAILED + 1))
  REPORT+=("$(printf '%-36s FAILED' "$1")")
}

step() { printf '\n==== %s\n' "$*"; }

# ---- 1. dependencies ----------------------------------------------------------------------
step "installing dependencies (scripts/install-deps.sh)"
if [ "$(id -u)" -eq 0 ]; then
  bash scripts/install-deps.sh || fail_step "install-deps.sh"
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo bash scripts/install-deps.sh || fail_step "install-deps.sh"
else
  echo "not root and no passwordless sudo: assuming the packages are installed" >&2
fi

# ---- 2. builds ----------------------------------------------------------------------------
build() { # <dir> <cmake args...>
  local dir=$1
  shift
  step "building $dir/"
  cmake -S . -B "$dir" "$@" && cmake --build "$dir" -j "$JOBS"
}

BUILD_OK=0 ASAN_OK=0
if build "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTG_SANITIZE=OFF; then
  BUILD_OK=1
else
  fail_step "build $BUILD/"
fi
if [ "${TG_SKIP_ASAN:-0}" != 1 ]; then
  if build "$ASAN_BUILD" -DCMAKE_BUILD_TYPE=Debug -DTG_SANITIZE=ON; then
    ASAN_OK=1
  else
    fail_step "build $ASAN_BUILD/"
  fi
fi

# ---- 3. unit tests ------------------------------------------------------------------------
run_ctest() { # <build dir>
  local dir=$1 xml="$RUN_TMP/ctest-${1//\//_}.xml" rc
  step "unit tests in $dir/ (ctest)"
  ctest --test-dir "$dir" --output-on-failure -j "$JOBS" --timeout 600 --output-junit "$xml"
  rc=$?
  count_junit "ctest $dir/" "$xml" "$rc"
}
[ $BUILD_OK = 1 ] && run_ctest "$BUILD"
[ $ASAN_OK = 1 ] && run_ctest "$ASAN_BUILD"

# ---- 4. integration tests -----------------------------------------------------------------
run_pytest() { # <label> <binary> <pytest args...>
  local label=$1 bin=$2 xml="$RUN_TMP/pytest-$RANDOM.xml" rc
  shift 2
  step "integration tests: $label (TOLLGATE_BIN=$bin)"
  # shellcheck disable=SC2086
  TOLLGATE_BIN=$bin timeout --foreground -k 30 "$PYTEST_TIMEOUT" \
    "$PY" -m pytest -q -p no:cacheprovider --basetemp="$RUN_TMP/pytest-$RANDOM" \
    --junitxml="$xml" "$@" ${TG_PYTEST_ARGS:-} tests/integration
  rc=$?
  [ $rc -eq 5 ] && rc=0 # no tests collected (yet): not a failure
  count_junit "$label" "$xml" "$rc"
}
[ $BUILD_OK = 1 ] && run_pytest "pytest $BUILD/" "$ROOT/$BUILD/tollgate"
[ $ASAN_OK = 1 ] && run_pytest "pytest $ASAN_BUILD/ (-m asan)" "$ROOT/$ASAN_BUILD/tollgate" -m asan

# ---- 5. fuzz targets ----------------------------------------------------------------------
# A smoke run, not a fuzzing campaign: it keeps the targets (and the tree under clang, whose
# warnings differ from gcc's) building, and catches a crash that shows up within seconds.
# A count of inputs and a seed rather than a time: the same code explores the same inputs on
# any machine, so the step passes or fails the same way every time (a campaign, README,
# explores further). A crashing input is kept in $FUZZ_BUILD/artifacts/ (the rest of
# RUN_TMP goes at exit).
run_fuzzers() {
  local passed=0 failed=0 target name
  for target in "$FUZZ_BUILD"/fuzz_*; do
    [ -x "$target" ] || continue
    name=$(basename "$target")
    mkdir -p "$RUN_TMP/corpus-$name" "$FUZZ_BUILD/artifacts"
    step "fuzzing $name: $FUZZ_RUNS inputs"
    if "$target" -runs="$FUZZ_RUNS" -seed=1 -print_final_stats=1 \
      -artifact_prefix="$FUZZ_BUILD/artifacts/$name-" "$RUN_TMP/corpus-$name" 2>&1 | tail -n 15; then
      passed=$((passed + 1))
    else
      failed=$((failed + 1))
      echo "$name failed: the input is in $FUZZ_BUILD/artifacts/" >&2
    fi
  done
  [ $((passed + failed)) -eq 0 ] && failed=1 # no target built: the build is broken
  PASSED=$((PASSED + passed)) FAILED=$((FAILED + failed))
  REPORT+=("$(printf '%-36s %s passed, %s failed, 0 skipped' "fuzz $FUZZ_BUILD/ ($FUZZ_RUNS inputs)" "$passed" "$failed")")
}
if [ "$FUZZ_RUNS" != 0 ]; then
  if build "$FUZZ_BUILD" -DTG_FUZZ=ON -DCMAKE_C_COMPILER=clang; then
    run_fuzzers
  else
    fail_step "build $FUZZ_BUILD/"
  fi
fi

# ---- 6. summary ---------------------------------------------------------------------------
cleanup # now, so that nothing is printed after the summary line
step "summary"
printf '%s\n' "${REPORT[@]}"
if [ "$SKIPPED" -gt 0 ]; then
  echo "$PASSED passed, $FAILED failed, $SKIPPED skipped"
else
  echo "$PASSED passed, $FAILED failed"
fi
[ "$FAILED" -eq 0 ]
