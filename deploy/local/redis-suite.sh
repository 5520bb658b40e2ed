#!/usr/bin/env bash
# Runs units of Redis' own test suite against a standalone redis-server and through slotproxy
# in front of a fresh 3-master cluster (a new cluster and proxy per unit: the suite changes
# server state), and prints a table per unit: tests passed directly, passed through the proxy,
# and the first test that failed through the proxy.
#
# Usage: deploy/local/redis-suite.sh [UNIT...]        (default: the units listed below)
#   SUITE=path/to/redis-7.0.15-tests.tar.gz  the suite (default: ../shared/ next to the project;
#          any Redis source tarball with tests/ works, e.g. from download.redis.io/releases)
#   UNIT_TIMEOUT=600  seconds one unit may take on one side before it is stopped
#   KEEP=dir          keep each run's output there
#   ONLY_TEST=name    run only the tests of that name (test_helper's --only)
# Tests listed in deploy/local/redis-suite-skips.txt (they fail against a standalone server
# too in this mode) are skipped on both sides. Tests listed in
# deploy/local/redis-suite-known-failures.txt (one reason each) are skipped through the proxy
# only, so that the rest of their unit runs, and count as failed. Exits 1 when a test that
# passes directly neither passes through the proxy nor is listed there.
# Installs tcl when it is missing. Uses the release binary (built if needed).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SUITE=${SUITE:-$ROOT/../shared/redis-7.0.15-tests.tar.gz}
UNIT_TIMEOUT=${UNIT_TIMEOUT:-600}
WORK=$(mktemp -d /tmp/slotproxy-suite.XXXXXX)
RUN=$WORK/run
BASE=${BASE_PORT:-7400}
PROXY_PORT=$((BASE + 10))
ADMIN_PORT=$((BASE + 11))
DIRECT_PORT=$((BASE + 20))
DEFAULT_UNITS=(unit/acl)

die() { echo "redis-suite: error: $*" >&2; exit 1; }
say() { echo "redis-suite: $*" >&2; }
# shellcheck source=deploy/local/lib.sh
. "$ROOT/deploy/local/lib.sh"

PROXY_PID=""
cleanup() {
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null || true
  for p in $BASE $((BASE + 1)) $((BASE + 2)) "$DIRECT_PORT"; do stop_node "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

[ -f "$SUITE" ] || die "no test suite at $SUITE (set SUITE=, e.g. a Redis source tarball from download.redis.io)"
ensure_redis
ensure_cargo
command -v tclsh >/dev/null 2>&1 || apt_install tcl || die "tclsh missing and apt-get install tcl failed"
(cd "$ROOT" && cargo build --release --quiet --bin slotproxy) || die "cargo build --release failed"
mkdir -p "$RUN"
tar -xzf "$SUITE" -C "$WORK" || die "cannot unpack $SUITE"
TREE=$(dirname "$(find "$WORK" -maxdepth 3 -name test_helper.tcl -path '*/tests/*' | head -1)")/..
[ -f "$TREE/tests/test_helper.tcl" ] || die "$SUITE has no tests/test_helper.tcl"
# UNSKIP="unit/acl …": run these units' first server block although it is tagged
# external:skip (Redis' ACL units are, as they also restart servers with their own config
# files in later blocks, which stay skipped). The edit is made in the unpacked copy only.
for unit in ${UNSKIP:-}; do
  [ -f "$TREE/tests/$unit.tcl" ] || die "no unit $unit in the suite"
  sed -i '1s/ external:skip//' "$TREE/tests/$unit.tcl"
done
mkdir -p "$TREE/src"
for tool in redis-server redis-cli redis-benchmark redis-check-aof redis-check-rdb; do
  command -v "$tool" >/dev/null 2>&1 && ln -sf "$(command -v "$tool")" "$TREE/src/$tool"
done

trim() { sed 's/^[[:space:]]*//; s/[[:space:]]*$//' <<<"$1"; }

# skips UNIT: --skiptest for each test of UNIT in redis-suite-skips.txt (they fail against a
# standalone server too in this mode; see that file).
skips() {
  local unit test
  while IFS='|' read -r unit test _; do
    case "$unit" in '#'* | '') continue ;; esac
    unit=$(trim "$unit") test=$(trim "$test")
    if [ "$unit" = "$1" ]; then printf '%s\0%s\0' --skiptest "$test"; fi
  done <"$ROOT/deploy/local/redis-suite-skips.txt"
}

# listed FILE UNIT: the test names of UNIT in FILE, one per line.
listed() {
  local unit test
  while IFS='|' read -r unit test _; do
    case "$unit" in '#'* | '') continue ;; esac
    unit=$(trim "$unit") test=$(trim "$test")
    [ "$unit" = "$2" ] && printf '%s\n' "$test"
  done <"$1"
  return 0
}
KNOWN=$ROOT/deploy/local/redis-suite-known-failures.txt

# run_unit PORT UNIT OUT [proxy]: the suite's verdict lines for UNIT against PORT, in OUT.
run_unit() {
  local skip=() test
  mapfile -d '' skip < <(skips "$2")
  if [ "${4:-}" = proxy ]; then
    while IFS= read -r test; do skip+=(--skiptest "$test"); done < <(listed "$KNOWN" "$2")
  fi
  (cd "$TREE" && timeout "$UNIT_TIMEOUT" tclsh tests/test_helper.tcl --host 127.0.0.1 --port "$1" \
    --singledb --cluster-mode --ignore-encoding --tags -needs:repl --single "$2" --clients 1 \
    ${ONLY_TEST:+--only "$ONLY_TEST"} "${skip[@]}" >"$3" 2>&1) || true
}

# The suite colours its verdicts; the counts read the plain text.
plain() { sed 's/\x1b\[[0-9;]*m//g' "$1"; }
passed() { plain "$1" | grep -c '^\[ok\]' || true; }
ok_names() { plain "$1" | sed -n 's/^\[ok\]: \(.*\) ([0-9]* ms)$/\1/p' | sort -u; }
first_failure() {
  plain "$1" | grep -m1 -E '^\[(err|exception)\]|^\[TIMEOUT\]' | cut -c1-90 || true
}

start_proxy() {
  for p in $BASE $((BASE + 1)) $((BASE + 2)); do start_node "$p" >/dev/null; done
  create_cluster $BASE $((BASE + 1)) $((BASE + 2)) >/dev/null
  wait_cluster_ok 3 $BASE $((BASE + 1)) $((BASE + 2))
  cat >"$RUN/proxy.toml" <<TOML
[proxy]
listen = "127.0.0.1:$PROXY_PORT"
worker_threads = 1
[admin]
listen = "127.0.0.1:$ADMIN_PORT"
[cluster]
seeds = ["127.0.0.1:$BASE"]
[compat]
admin_commands = true
TOML
  (cd "$RUN" && exec "$ROOT/target/release/slotproxy" --config "$RUN/proxy.toml" >"$RUN/proxy.log" 2>&1) &
  PROXY_PID=$!
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && return
    sleep 0.2
  done
  die "slotproxy did not become ready (see $RUN/proxy.log)"
}

stop_all() {
  [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null && wait "$PROXY_PID" 2>/dev/null || true
  PROXY_PID=""
  for p in $BASE $((BASE + 1)) $((BASE + 2)) "$DIRECT_PORT"; do stop_node "$p"; done
  rm -rf "${RUN:?}"/[0-9]*
}

units=("$@")
[ ${#units[@]} -gt 0 ] || units=("${DEFAULT_UNITS[@]}")
printf '%-28s %8s %8s %7s  %s\n' unit direct proxy ratio "first failure through the proxy"
total_direct=0 total_proxy=0 unexpected=()
for unit in "${units[@]}"; do
  name=${unit//\//_}
  start_node "$DIRECT_PORT" plain >/dev/null
  run_unit "$DIRECT_PORT" "$unit" "$RUN/$name.direct"
  start_proxy
  run_unit "$PROXY_PORT" "$unit" "$RUN/$name.proxy" proxy
  stop_all
  # Passed directly, not through the proxy, and not listed: a regression (or a new find).
  while IFS= read -r test; do
    [ -n "$test" ] && unexpected+=("$unit | $test")
  done < <(comm -23 <(ok_names "$RUN/$name.direct") <(ok_names "$RUN/$name.proxy") |
    comm -23 - <(listed "$KNOWN" "$unit" | sort -u))
  d=$(passed "$RUN/$name.direct") p=$(passed "$RUN/$name.proxy")
  total_direct=$((total_direct + d)) total_proxy=$((total_proxy + p))
  ratio=$(awk -v p="$p" -v d="$d" 'BEGIN { if (d > 0) printf "%.0f%%", 100 * p / d; else print "-" }')
  printf '%-28s %8s %8s %7s  %s\n' "$unit" "$d" "$p" "$ratio" "$(first_failure "$RUN/$name.proxy")"
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$RUN/$name".* "$KEEP/"; fi
done
printf '%-28s %8s %8s %7s\n' total "$total_direct" "$total_proxy" \
  "$(awk -v p="$total_proxy" -v d="$total_direct" 'BEGIN { if (d > 0) printf "%.1f%%", 100 * p / d; else print "-" }')"
if [ ${#unexpected[@]} -gt 0 ]; then
  echo "redis-suite: ${#unexpected[@]} test(s) pass on a standalone server but not through the proxy, and are not in deploy/local/redis-suite-known-failures.txt:" >&2
  printf '  %s\n' "${unexpected[@]}" >&2
  exit 1
fi
