#!/usr/bin/env bash
# Measures slotproxy against the cluster it fronts, in one run on one machine, so that the
# ratios hold even when the machine is noisy. Starts its own fresh cluster (127.0.0.1:7100-7102)
# and proxy (127.0.0.1:6390, admin :9190) under deploy/local/.bench and removes them at the end;
# the demo (up.sh) is never touched.
#
# For each round, every workload runs back to back: redis-benchmark --cluster straight at the
# nodes, then redis-benchmark through the proxy, then (unless REFERENCE=none) through
# nutcracker (twemproxy, a C proxy from Debian) in front of three standalone redis-servers
# (127.0.0.1:7110-7112, nutcracker on :6391), as a reference proxy measured on the same machine.
# The table shows the median over the rounds: ops/s, p50/p99 latency, the proxy/direct ratio,
# the proxy's CPU time per operation (utime+stime from /proc/PID/stat), the nodes' CPU time per
# operation in the direct run, and nutcracker's ops/s and CPU time per operation.
# Memory: RSS idle, after each round, and with 1000 idle client connections.
#
# Usage: deploy/local/bench.sh
# Environment: ROUNDS (3), N_P1 (100000), N_P16 (500000), N_MSET (50000), CLIENTS (50),
#   ONLY (a subset of the workloads, e.g. "get-P1 get-P16"), WORKERS (the proxy's
#   proxy.worker_threads, 1 by default because the nodes and redis-benchmark share the cores;
#   0 = one per core; see docs/perf.md), BIN (the slotproxy binary to measure; default: build
#   target/release/slotproxy), REFERENCE (nutcracker, the default, installed with apt-get when
#   missing; acl: the same proxy again, logged in as an ACL user with `~* &* +@all -@dangerous`,
#   so every command goes through the permission check; or none).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN="$ROOT/deploy/local/.bench"
NODES=(7100 7101 7102)
PROXY_PORT=6390
ADMIN_PORT=9190
ROUNDS=${ROUNDS:-3}
N_P1=${N_P1:-100000}
N_P16=${N_P16:-500000}
N_MSET=${N_MSET:-50000}
CLIENTS=${CLIENTS:-50}
WORKERS=${WORKERS:-1}
BIN=${BIN:-}
REFERENCE=${REFERENCE:-nutcracker}
REF_NODES=(7110 7111 7112)
REF_PORT=6391
REF_STATS_PORT=22291

die() { echo "bench.sh: error: $*" >&2; exit 1; }
say() { echo "bench.sh: $*" >&2; }
# shellcheck source=deploy/local/lib.sh
. "$ROOT/deploy/local/lib.sh"

PID=""
REF_PID=""
IDLE_PID=""
# stop_process PID: SIGTERM, then SIGKILL after 5 s.
stop_process() {
  kill -0 "$1" 2>/dev/null || return 0
  kill -TERM "$1"
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null
}
cleanup() {
  set +e
  [ -n "$IDLE_PID" ] && kill "$IDLE_PID" 2>/dev/null
  [ -n "$PID" ] && stop_process "$PID"
  [ -n "$REF_PID" ] && stop_process "$REF_PID"
  for p in "${NODES[@]}" "${REF_NODES[@]}"; do stop_node "$p"; done
  rm -rf "$RUN"
}
trap cleanup EXIT

start_proxy() {
  if [ -z "$BIN" ]; then
    ensure_cargo
    say "building slotproxy (release)"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
    BIN="$ROOT/target/release/slotproxy"
  fi
  [ -x "$BIN" ] || die "no slotproxy binary at $BIN"
  BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
  cat >"$RUN/bench.toml" <<TOML
[proxy]
listen = "127.0.0.1:$PROXY_PORT"
worker_threads = $WORKERS

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[cluster]
seeds = ["127.0.0.1:${NODES[0]}"]
TOML
  (cd "$RUN" && exec "$BIN" --config "$RUN/bench.toml" >"$RUN/slotproxy.log" 2>&1) &
  PID=$!
  for _ in $(seq 100); do
    if curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1; then return; fi
    kill -0 "$PID" 2>/dev/null || die "slotproxy exited at start: $(tail -5 "$RUN/slotproxy.log")"
    sleep 0.2
  done
  die "slotproxy did not become ready within 20 s (see $RUN/slotproxy.log)"
}

# The reference proxy: nutcracker hashing keys (ketama) over three standalone redis-servers,
# one connection per server, like the proxy's one multiplexed connection per node. Sets
# REFERENCE=none, with a message, when nutcracker cannot be installed.
start_reference() {
  if ! command -v nutcracker >/dev/null 2>&1; then
    say "nutcracker not found; installing it with apt-get (REFERENCE=none skips the reference)"
    if ! apt_install nutcracker || ! command -v nutcracker >/dev/null 2>&1; then
      say "nutcracker could not be installed: the reference columns stay empty"
      REFERENCE=none
      return
    fi
  fi
  for p in "${REF_NODES[@]}"; do start_node "$p" plain; done
  {
    echo "bench:"
    echo "  listen: 127.0.0.1:$REF_PORT"
    echo "  hash: fnv1a_64"
    echo "  distribution: ketama"
    echo "  redis: true"
    echo "  server_connections: 1"
    echo "  servers:"
    for p in "${REF_NODES[@]}"; do echo "    - 127.0.0.1:$p:1"; done
  } >"$RUN/nutcracker.yml"
  nutcracker -c "$RUN/nutcracker.yml" -s "$REF_STATS_PORT" -o "$RUN/nutcracker.log" >/dev/null 2>&1 &
  REF_PID=$!
  for _ in $(seq 50); do
    [ "$(cli "$REF_PORT" set bench:probe 1 2>/dev/null)" = "OK" ] && return
    kill -0 "$REF_PID" 2>/dev/null || die "nutcracker exited at start (see $RUN/nutcracker.log)"
    sleep 0.1
  done
  die "nutcracker did not answer within 5 s (see $RUN/nutcracker.log)"
}

ticks_of() { awk '{print $14 + $15}' "/proc/$1/stat"; }
cpu_ticks() { ticks_of "$PID"; }
# The cluster nodes' CPU ticks together: what serving the same commands costs Redis itself.
node_ticks() {
  local t=0 p
  for p in "${NODES[@]}"; do t=$((t + $(ticks_of "$(cat "$RUN/$p/redis.pid")"))); done
  echo "$t"
}
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/${1:-$PID}/status"; }
fd_count() { find "/proc/$PID/fd" -mindepth 1 -maxdepth 1 | wc -l; }

# bench TARGET N P ARGS...: prints "ops/s p50_ms p99_ms" from redis-benchmark's CSV output.
bench() {
  local target=$1 n=$2 p=$3
  shift 3
  local where=(-h 127.0.0.1 -p "$PROXY_PORT")
  [ "$target" = direct ] && where=(--cluster -h 127.0.0.1 -p "${NODES[0]}")
  [ "$target" = reference ] && where=(-h 127.0.0.1 -p "$REF_PORT")
  [ "$target" = reference ] && [ "$REFERENCE" = acl ] \
    && where=(-h 127.0.0.1 -p "$PROXY_PORT" --user bench -a benchpw)
  local out
  out=$(timeout 300 redis-benchmark "${where[@]}" -c "$CLIENTS" -n "$n" -P "$p" -d 64 -r 100000 --csv "$@" 2>/dev/null) \
    || die "redis-benchmark $target -P $p $* failed"
  # CSV columns: "test","rps","avg","min","p50","p95","p99","max"
  echo "$out" | grep '^"' | grep -v '^"test"' | tail -1 | tr -d '"' | awk -F, '{print $2, $5, $7}'
}

# The workloads: name, requests, pipeline depth, redis-benchmark arguments.
# mset10 is `-t mset`: 10 keys of 64 bytes each. Through a proxy, redis-benchmark draws each key
# at random, so the 10 keys fall in 10 hash slots spread over all three masters and the proxy
# splits the command. The cluster itself refuses such an MSET, so redis-benchmark --cluster
# puts the 10 keys under one hash tag: the direct column is a one-slot MSET.
read -r -a WORKLOADS <<<"${ONLY:-get-P1 set-P1 get-P16 set-P16 mset10-P1 get-P1-c10}"
workload() {
  case $1 in
    get-P1) echo "$N_P1 1 -t get" ;;
    set-P1) echo "$N_P1 1 -t set" ;;
    get-P16) echo "$N_P16 16 -t get" ;;
    set-P16) echo "$N_P16 16 -t set" ;;
    mset10-P1) echo "$N_MSET 1 -t mset" ;;
    get-P1-c10) echo "$N_P1 1 -c 10 -t get" ;;
    *) die "unknown workload '$1' in ONLY (known: get-P1 set-P1 get-P16 set-P16 mset10-P1 get-P1-c10)" ;;
  esac
}
for w in "${WORKLOADS[@]}"; do (workload "$w" >/dev/null) || exit 1; done

ensure_redis
command -v curl >/dev/null 2>&1 || die "curl not found: apt-get install -y curl"
ports=("${NODES[@]}" "$PROXY_PORT" "$ADMIN_PORT")
[ "$REFERENCE" = nutcracker ] && ports+=("${REF_NODES[@]}" "$REF_PORT" "$REF_STATS_PORT")
for p in "${ports[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p is in use; stop what runs there first"; fi
done
rm -rf "$RUN"
mkdir -p "$RUN"
for p in "${NODES[@]}"; do start_node "$p"; done
create_cluster "${NODES[@]}"
wait_cluster_ok 3 "${NODES[@]}"
start_proxy
case $REFERENCE in
  nutcracker) start_reference ;;
  acl)
    # A restricted user: not `+@all` alone, so the proxy checks every command's rules and keys.
    cli "$PROXY_PORT" ACL SETUSER bench on '>benchpw' '~*' '&*' '+@all' '-@dangerous' >/dev/null \
      || die "ACL SETUSER through the proxy failed"
    REF_PID=$PID
    ;;
  none) ;;
  *) die "REFERENCE must be nutcracker, acl or none, not '$REFERENCE'" ;;
esac
sleep 1
RSS_IDLE=$(rss_kb)
REF_RSS_IDLE=""
[ -n "$REF_PID" ] && REF_RSS_IDLE=$(rss_kb "$REF_PID")
say "proxy pid $PID, idle RSS ${RSS_IDLE} kB; $ROUNDS rounds"

declare -A RESULTS
RSS_ROUNDS=()
for round in $(seq "$ROUNDS"); do
  for w in "${WORKLOADS[@]}"; do
    read -r n p args <<<"$(workload "$w")"
    n0=$(node_ticks)
    # shellcheck disable=SC2086
    d=$(bench direct "$n" "$p" $args)
    n1=$(node_ticks)
    c0=$(cpu_ticks)
    # shellcheck disable=SC2086
    x=$(bench proxy "$n" "$p" $args)
    c1=$(cpu_ticks)
    r="0 0"
    if [ "$REFERENCE" != none ]; then
      r0=$(ticks_of "$REF_PID")
      # shellcheck disable=SC2086
      read -r rrps _ <<<"$(bench reference "$n" "$p" $args)"
      r="$rrps $(($(ticks_of "$REF_PID") - r0))"
    fi
    RESULTS[$w]+="$d $x $((c1 - c0)) $n $((n1 - n0)) $r"$'\n'
    say "round $round $w: direct $d | proxy $x | $REFERENCE ${r%% *} ops/s"
  done
  RSS_ROUNDS+=("$(rss_kb)")
done

# 1000 idle client connections: RSS growth per connection.
before_conns=$(rss_kb)
fds=$(fd_count)
redis-benchmark -h 127.0.0.1 -p "$PROXY_PORT" -I -c 1000 >/dev/null 2>&1 &
IDLE_PID=$!
for _ in $(seq 100); do
  [ "$(fd_count)" -ge $((fds + 1000)) ] && break
  sleep 0.1
done
sleep 1
with_conns=$(rss_kb)
conns=$(($(fd_count) - fds))
kill "$IDLE_PID" 2>/dev/null
wait "$IDLE_PID" 2>/dev/null || true
IDLE_PID=""

TICK=$(getconf CLK_TCK)
echo
echo "slotproxy bench: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
echo "redis-benchmark -c $CLIENTS -d 64 -r 100000; worker_threads=$WORKERS; median of $ROUNDS interleaved rounds"
echo
printf '%-11s %12s %12s %6s %15s %15s %11s %10s %12s %10s\n' workload "direct ops/s" "proxy ops/s" ratio \
  "direct p50/p99" "proxy p50/p99" "proxy us/op" "nodes us/op" "ref ops/s" "ref us/op"
for w in "${WORKLOADS[@]}"; do
  printf '%s' "${RESULTS[$w]}" | awk -v w="$w" -v hz="$TICK" '
    function median(a, n,   i, j, t) {
      for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    NF >= 11 { k++; drps[k] = $1; dp50[k] = $2; dp99[k] = $3; xrps[k] = $4; xp50[k] = $5; xp99[k] = $6
               ratio[k] = $4 / $1; cpu[k] = $7 / hz * 1e6 / $8; node[k] = $9 / hz * 1e6 / $8
               rrps[k] = $10; rcpu[k] = $11 / hz * 1e6 / $8 }
    END {
      ref = median(rrps, k) > 0
      printf "%-11s %12.0f %12.0f %6.2f %7.3f/%-7.3f %7.3f/%-7.3f %11.2f %10.2f %12s %10s\n", w,
        median(drps, k), median(xrps, k), median(ratio, k), median(dp50, k), median(dp99, k),
        median(xp50, k), median(xp99, k), median(cpu, k), median(node, k),
        ref ? sprintf("%.0f", median(rrps, k)) : "-", ref ? sprintf("%.2f", median(rcpu, k)) : "-"
    }'
done
echo
echo "mset10 = MSET of 10 random keys (64 bytes each): through a proxy they fall in 10 hash slots"
echo "on all 3 masters and the proxy splits the command; the direct column is the one-slot MSET"
echo "redis-benchmark --cluster sends instead (the cluster refuses a multi-slot MSET)."
echo "nodes us/op = CPU time of all cluster nodes per command in the direct run: the cost of the"
echo "same network round trips in Redis itself, a floor for what a proxy doing them twice can reach."
echo "get-P1-c10 = moderate load (10 clients): the p99 the proxy adds is proxy p99 - direct p99."
if [ "$REFERENCE" = acl ]; then
  echo "ref = the same proxy, right after, logged in as ACL user 'bench' (~* &* +@all -@dangerous):"
  echo "every command is checked against the user's rules and keys; ref us/op is the proxy's CPU."
elif [ "$REFERENCE" != none ]; then
  echo "ref = nutcracker $(nutcracker --version 2>&1 | head -1 | sed 's/.*nutcracker-//') (C, single-threaded) over 3 standalone redis-servers,"
  echo "same workloads right after the proxy's run; ref us/op is nutcracker's CPU time per command."
fi
echo
per_round=0
for w in "${WORKLOADS[@]}"; do
  read -r n _ <<<"$(workload "$w")"
  per_round=$((per_round + n))
done
echo "proxy RSS: idle ${RSS_IDLE} kB; after each round ($((per_round / 1000))k commands each): ${RSS_ROUNDS[*]} kB"
[ "$REFERENCE" = nutcracker ] && [ -n "$REF_RSS_IDLE" ] && echo "nutcracker RSS: idle ${REF_RSS_IDLE} kB; after the rounds $(rss_kb "$REF_PID") kB"
echo "proxy RSS with $conns idle client connections: ${with_conns} kB (+$(( (with_conns - before_conns) * 1000 / (conns > 0 ? conns : 1) )) bytes per connection)"
