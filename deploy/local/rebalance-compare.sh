#!/usr/bin/env bash
# Compares slotproxy's own slot moves with redis-cli's on identical data, in one run.
# MODE=rebalance (default): 3 masters + 1 empty one, slotproxy's `POST /rebalance
# {"use_empty_masters":true}` against `redis-cli --cluster rebalance --cluster-use-empty-masters`.
# MODE=drain: 4 masters, the fourth drained (`POST /nodes/{id}/drain` against
# `redis-cli --cluster rebalance --cluster-weight <id>=0`).
# For each tool: a fresh cluster on loopback, a slotproxy in front of it, the same dataset loaded
# through the proxy (strings, hashes and keys with TTLs), client traffic through the proxy
# (a background load, LOAD=steady|benchmark below, and a steady client timing each of its
# requests, examples/steady_client.rs) before and during the move, then checks: every loaded
# key present, no open slot, client errors. Prints one table and the ratios against issue 19's
# goals (slotproxy's wall time <= 1/3 of redis-cli's; the steady client's p99 during the move
# <= 2x its p99 in the 10 s before).
# Bounded: stops by itself; everything it starts is stopped on exit.
# Usage: [MODE=rebalance|drain] [LOAD=steady|benchmark] [BATCH_SLOTS=64] [KEEP_STEADY=dir] [ONLY=slotproxy]
#        deploy/local/rebalance-compare.sh [keys]   (default 100000)
# KEEP_STEADY keeps each steady client's log (unix_ns latency_us ok|err), the move's window
# and the proxy's log there (LOG_LEVEL sets the proxy's filter, e.g.
# "warn,slotproxy::migration=debug" to line the steps of each batch up with the slow
# requests); ONLY=slotproxy skips redis-cli (and the ratios), for looking into slotproxy alone.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KEYS=${1:-100000}
MODE=${MODE:-rebalance}
case "$MODE" in rebalance | drain) ;; *) echo "rebalance-compare: MODE must be rebalance or drain" >&2; exit 2 ;; esac
case "${LOAD:-steady}" in steady | benchmark) ;; *) echo "rebalance-compare: LOAD must be steady or benchmark" >&2; exit 2 ;; esac
WORK=$(mktemp -d "${WORK_BASE:-/tmp}/slotproxy-compare.XXXXXX")
PIDS=()

die() { echo "rebalance-compare: error: $*" >&2; exit 1; }
say() { echo "rebalance-compare: $*" >&2; }

cleanup() {
  # Background functions (the load) are subshells: their children go first.
  for pid in "${PIDS[@]}"; do pkill -P "$pid" 2>/dev/null || true; kill "$pid" 2>/dev/null || true; done
  for dir in "$WORK"/node-*; do
    [ -f "$dir/redis.pid" ] && kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
  done
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v redis-server >/dev/null || die "redis-server not found: run deploy/local/up.sh once or apt-get install -y redis-server"
command -v curl >/dev/null || die "curl not found: apt-get install -y curl"
(cd "$ROOT" && cargo build --release --quiet && cargo build --release --quiet --example steady_client) \
  || die "cargo build --release failed"
BIN="$ROOT/target/release/slotproxy"
STEADY="$ROOT/target/release/examples/steady_client"

cli() { redis-cli -h 127.0.0.1 -p "$@"; }

# start_cluster BASE: masters on BASE..BASE+2 with all slots, an empty master on BASE+3
# (MODE=drain: the four masters share the slots).
start_cluster() {
  local base=$1 port
  for port in $base $((base + 1)) $((base + 2)) $((base + 3)); do
    mkdir -p "$WORK/node-$port"
    redis-server --port "$port" --bind 127.0.0.1 --daemonize yes --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-node-timeout 2000 --dir "$WORK/node-$port" \
      --save '' --appendonly no --logfile "$WORK/node-$port/redis.log" \
      --pidfile "$WORK/node-$port/redis.pid" || die "redis-server $port failed"
  done
  for port in $base $((base + 1)) $((base + 2)) $((base + 3)); do
    for _ in $(seq 50); do [ "$(cli "$port" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
  done
  if [ "$MODE" = drain ]; then
    cli "$base" cluster addslotsrange 0 4095 >/dev/null
    cli $((base + 1)) cluster addslotsrange 4096 8191 >/dev/null
    cli $((base + 2)) cluster addslotsrange 8192 12287 >/dev/null
    cli $((base + 3)) cluster addslotsrange 12288 16383 >/dev/null
  else
    cli "$base" cluster addslotsrange 0 5460 >/dev/null
    cli $((base + 1)) cluster addslotsrange 5461 10922 >/dev/null
    cli $((base + 2)) cluster addslotsrange 10923 16383 >/dev/null
  fi
  for port in $((base + 1)) $((base + 2)) $((base + 3)); do cli "$base" cluster meet 127.0.0.1 "$port" >/dev/null; done
  for _ in $(seq 150); do
    if redis-cli --cluster check "127.0.0.1:$base" 2>/dev/null | grep -q "All 16384 slots covered" \
      && [ "$(cli $((base + 3)) cluster nodes | wc -l)" = 4 ] \
      && redis-cli --cluster check "127.0.0.1:$base" 2>/dev/null | grep -q "All nodes agree"; then
      return
    fi
    sleep 0.2
  done
  die "cluster on $base did not become consistent"
}

# start_proxy BASE PORT ADMIN
start_proxy() {
  local base=$1 port=$2 admin=$3 dir="$WORK/proxy-$2"
  mkdir -p "$dir"
  cat >"$dir/proxy.toml" <<EOF
[proxy]
listen = "127.0.0.1:$port"
[admin]
listen = "127.0.0.1:$admin"
[cluster]
seeds = ["127.0.0.1:$base", "127.0.0.1:$((base + 1))"]
[migration]
data_dir = "$dir/data"
batch_slots = ${BATCH_SLOTS:-64}
parallel_slots = ${PARALLEL_SLOTS:-4}
batch_keys = ${BATCH_KEYS:-100}
max_client_p99_ratio = ${MAX_CLIENT_P99_RATIO:-2.0}
[log]
level = "${LOG_LEVEL:-warn}"
EOF
  "$BIN" --config "$dir/proxy.toml" >"$dir/proxy.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    curl -fs "127.0.0.1:$admin/readyz" >/dev/null 2>&1 && return
    sleep 0.1
  done
  die "slotproxy on $port did not become ready (see $dir/proxy.log)"
}

dataset() {
  awk -v n="$KEYS" 'BEGIN {
    v = "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    for (i = 0; i < n; i++) {
      if (i % 10 == 0) printf "HSET k:%d f1 %s f2 %d\r\n", i, v, i
      else if (i % 20 == 1) printf "SET k:%d %s EX 3600\r\n", i, v
      else printf "SET k:%d %s\r\n", i, v
    }
  }'
}

# traffic PORT OUT STOPFILE: the background load until STOPFILE appears. LOAD=steady (default):
# LOAD_CONNECTIONS (10) connections of the steady client, 500 requests/s each — a moderate load.
# LOAD=benchmark: redis-benchmark runs (-c 10, as fast as they go), which on a small machine
# leave no CPU idle, so that any extra work shows in every client's tail latency.
traffic() {
  local port=$1 out=$2 stop=$3
  if [ "${LOAD:-steady}" = benchmark ]; then
    while [ ! -e "$stop" ]; do
      redis-benchmark -h 127.0.0.1 -p "$port" -t set,get -r 100000 -c 10 -d 64 -n 5000 2>&1 | tr '\r' '\n' >>"$out" || true
    done
  else
    "$STEADY" "127.0.0.1:$port" "$out" "$stop" "${LOAD_CONNECTIONS:-10}" || echo "error: the background load failed" >>"$out"
  fi
}

errors_in() { grep -c -i -E "error| err$" "$1" || true; }

# cpu_ms PID...: user + system CPU time (ms) the processes used so far.
cpu_ms() {
  local pid hz total=0
  hz=$(getconf CLK_TCK)
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
  done
  echo $((total * 1000 / hz))
}

# steal_ms: CPU time (ms, all CPUs) the hypervisor gave to others so far. On a shared virtual
# machine it tells a noisy run (p99 before the move far above its usual) from a fair one.
steal_ms() {
  awk -v hz="$(getconf CLK_TCK)" '/^cpu / { print int($9 * 1000 / hz) }' /proc/stat
}

# steady_p99 LOG FROM_NS TO_NS: the p99 (ms) of the steady client's requests sent in the window.
steady_p99() {
  awk -v a="$2" -v b="$3" '$1 >= a && $1 < b { print $2 }' "$1" | sort -n \
    | awk '{ v[NR] = $1 } END { if (NR == 0) { print "n/a"; exit } i = int(NR * 0.99 + 0.999999); printf "%.2f\n", v[i] / 1000 }'
}
steady_errors() { awk '$3 != "ok"' "$1" | wc -l; }

missing_keys() {
  local port=$1
  seq 0 $((KEYS - 1)) | sed 's/^/k:/' | xargs -n 1000 redis-cli -h 127.0.0.1 -p "$port" exists \
    | awk -v n="$KEYS" '{ s += $1 } END { print n - s }'
}

# run TOOL BASE PORT ADMIN -> prints one table row
run() {
  local tool=$1 base=$2 port=$3 admin=$4
  say "$tool: starting a cluster on $base-$((base + 3)) and a proxy on $port"
  start_cluster "$base"
  start_proxy "$base" "$port" "$admin"
  local proxy_pid=${PIDS[-1]}
  dataset | cli "$port" --pipe >/dev/null || die "loading the dataset failed"
  local before="$WORK/$tool-before.log" during="$WORK/$tool-during.log"
  local steady="$WORK/$tool-steady.log"
  # STEADY_NODE=i points the steady client at node i itself (its MOVED replies still time the
  # node), to tell the node's own delay from the proxy's.
  local steady_port=$port
  [ -n "${STEADY_NODE:-}" ] && steady_port=$((base + STEADY_NODE))
  "$STEADY" "127.0.0.1:$steady_port" "$steady" "$WORK/$tool-stop-steady" &
  local spid=$!
  PIDS+=("$spid")
  traffic "$port" "$before" "$WORK/$tool-stop-before" &
  local tpid=$!
  PIDS+=("$tpid")
  local steal_before steal_start
  steal_before=$(steal_ms)
  sleep 11
  touch "$WORK/$tool-stop-before"
  wait "$tpid"
  traffic "$port" "$during" "$WORK/$tool-stop-during" &
  tpid=$!
  PIDS+=("$tpid")
  local start end moved last_id last_keys
  last_id=$(cli $((base + 3)) cluster myid)
  last_keys=$(cli $((base + 3)) dbsize)
  local node_pids cpu_nodes cpu_proxy
  node_pids=$(cat "$WORK"/node-$base/redis.pid "$WORK"/node-$((base + 1))/redis.pid \
    "$WORK"/node-$((base + 2))/redis.pid "$WORK"/node-$((base + 3))/redis.pid)
  cpu_nodes=$(cpu_ms $node_pids)
  cpu_proxy=$(cpu_ms "$proxy_pid")
  steal_start=$(steal_ms)
  start=$(date +%s.%N)
  local start_ns end_ns
  start_ns=$(date +%s%N)
  if [ "$tool" = slotproxy ]; then
    local id job state request=(-XPOST "127.0.0.1:$admin/rebalance" -d '{"use_empty_masters":true}')
    [ "$MODE" = drain ] && request=(-XPOST "127.0.0.1:$admin/nodes/127.0.0.1:$((base + 3))/drain")
    id=$(curl -fs "${request[@]}" | sed -n 's/.*"id": *"\([^"]*\)".*/\1/p' | head -1)
    [ -n "$id" ] || die "POST /rebalance gave no job id"
    # Polled with one curl per 0.2 s and bash builtins only: on a small machine a pipeline
    # of tools per poll costs the clients CPU that redis-cli's run does not pay.
    : >"$WORK/jobs.log"
    for _ in $(seq 9000); do
      curl -fs "127.0.0.1:$admin/migrations/$id" >"$WORK/job.json" || true
      job=""
      IFS= read -r -d '' job <"$WORK/job.json" || true
      printf '%s\n' "${job//$'\n'/}" >>"$WORK/jobs.log"
      state=""
      [[ $job =~ \"state\":\ *\"([a-z]+)\" ]] && state=${BASH_REMATCH[1]}
      [ "$state" = running ] || [ "$state" = pending ] || break
      sleep 0.2
    done
    # The pace over time: workers, pause and the clients' p99 the pacer saw.
    grep -o '"pace": *{[^}]*}' "$WORK/jobs.log" \
      | sed 's/.*"workers": *\([0-9]*\).*"delay_ms": *\([0-9]*\).*"client_p99_ms": *\([0-9.a-z]*\).*/workers:\1 delay_ms:\2 client_p99_ms:\3/' \
      >"$WORK/pace.log" || true
    say "slotproxy's pace every 0.2 s: $(sort -u "$WORK/pace.log" | wc -l) distinct; $(tr '\n' '|' <"$WORK/pace.log" | tr -s ' ')"
    [ "$state" = completed ] || die "the slotproxy job ended $state"
    end=$(date +%s.%N)
    moved=$(curl -fs "127.0.0.1:$admin/migrations/$id" | sed -n 's/.*"keys_moved": *\([0-9]*\).*/\1/p' | head -1)
    say "slotproxy's pace at the end: $(curl -fs "127.0.0.1:$admin/migrations/$id" | tr -d '\n' | grep -o '"pace": *{[^}]*}' | tr -s ' ')"
  else
    local how=(--cluster-use-empty-masters)
    [ "$MODE" = drain ] && how=(--cluster-weight "$last_id=0")
    timeout 1800 redis-cli --cluster rebalance "127.0.0.1:$base" "${how[@]}" \
      >"$WORK/redis-cli.log" 2>&1 || die "redis-cli --cluster rebalance failed (see $WORK/redis-cli.log)"
    end=$(date +%s.%N)
    moved=$(cli $((base + 3)) dbsize)
    [ "$MODE" = drain ] && moved=$((last_keys - moved))
  fi
  end_ns=$(date +%s%N)
  say "$tool: CPU during the move: redis nodes $(($(cpu_ms $node_pids) - cpu_nodes)) ms, proxy $(($(cpu_ms "$proxy_pid") - cpu_proxy)) ms (incl. client traffic)"
  local steal_end
  steal_end=$(steal_ms)
  say "$tool: CPU stolen by the host: $((steal_start - steal_before)) ms in the ~11 s before the move, $((steal_end - steal_start)) ms during it (a quiet host: near 0)"
  touch "$WORK/$tool-stop-during" "$WORK/$tool-stop-steady"
  wait "$tpid"
  wait "$spid" || die "the steady client failed"
  if [ -n "${KEEP_STEADY:-}" ]; then
    mkdir -p "$KEEP_STEADY" && cp "$steady" "$KEEP_STEADY/$tool-steady.log"
    cp "$WORK/proxy-$port/proxy.log" "$KEEP_STEADY/$tool-proxy.log" 2>/dev/null || true
    echo "$start_ns $end_ns" >"$KEEP_STEADY/$tool-window"
  fi
  local open missing counts wall p
  open=$(for p in $base $((base + 1)) $((base + 2)) $((base + 3)); do cli "$p" cluster nodes | grep myself; done | grep -c '\[' || true)
  missing=$(missing_keys "$port")
  counts=$(for p in $base $((base + 1)) $((base + 2)) $((base + 3)); do
    cli "$p" cluster nodes | grep myself | awk '{ n = 0; for (i = 9; i <= NF; i++) { if ($i ~ /^\[/) continue; split($i, r, "-"); n += (r[2] == "" ? 1 : r[2] - r[1] + 1) } printf "%d ", n }'
  done)
  wall=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.2f", e - s }')
  local pb pd errors
  pb=$(steady_p99 "$steady" $((start_ns - 10000000000)) "$start_ns")
  pd=$(steady_p99 "$steady" "$start_ns" "$end_ns")
  errors=$(($(errors_in "$during") + $(steady_errors "$steady")))
  echo "$wall $pb $pd $errors $missing" >"$WORK/$tool.result"
  awk -v t="$tool" -v w="$wall" -v m="$moved" -v e="$errors" -v pb="$pb" -v pd="$pd" -v o="$open" \
    -v x="$missing" -v c="$counts" \
    'BEGIN { printf "%-10s %8s %10s %9.0f %9.0f %8s %11s %11s %6s %8s  %s\n", t, w, m, (w > 0 ? m / w : 0), (w > 0 ? 4096 / w : 0), e, pb, pd, o, x, c }'
}

echo "$MODE of $KEYS keys, 4096 slots moved, on $(nproc) cores ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1))"
printf '%-10s %8s %10s %9s %9s %8s %11s %11s %6s %8s  %s\n' tool "wall s" "keys moved" "keys/s" \
  "slots/s" "errors" "p99 before" "p99 during" "open" "missing" "slots per master"
run slotproxy 7210 6391 9191
if [ "${ONLY:-}" = slotproxy ]; then exit 0; fi
run redis-cli 7220 6392 9192
if [ "${LOAD:-steady}" = benchmark ]; then load="redis-benchmark -c 10 SET+GET runs, as fast as they go"; else load="${LOAD_CONNECTIONS:-10} connections x 500 SET/GET per second"; fi
echo "(p99 in ms of the steady client, one SET or GET every 2 ms through the proxy: the 10 s before the move, and the move; background load: $load)"
read -r sp_wall sp_pb sp_pd sp_err sp_missing <"$WORK/slotproxy.result"
read -r rc_wall _ <"$WORK/redis-cli.result"
awk -v sw="$sp_wall" -v rw="$rc_wall" -v pb="$sp_pb" -v pd="$sp_pd" -v e="$sp_err" -v x="$sp_missing" 'BEGIN {
  r = (rw > 0 ? sw / rw : 0); p = (pb > 0 ? pd / pb : 0)
  printf "goal: slotproxy wall / redis-cli wall = %.2f (<= 0.33: %s)\n", r, (r <= 0.33 ? "met" : "not met")
  printf "goal: slotproxy clients p99 during / before = %.2f (<= 2.0: %s)\n", p, (p <= 2.0 ? "met" : "not met")
  printf "goal: client errors %d, keys missing %d (0 and 0: %s)\n", e, x, (e == 0 && x == 0 ? "met" : "not met")
}'
