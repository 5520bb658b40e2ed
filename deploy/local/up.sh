#!/usr/bin/env bash
# Starts the local demo: a Redis Cluster of 3 masters on 127.0.0.1:7000-7002, one empty spare
# master on 7003 (joined, no slots), and slotproxy on 127.0.0.1:6380 (admin on :9180).
# Installs redis-server when it is missing. Safe to run again: running nodes are kept, the
# proxy is rebuilt and restarted. Stop everything with deploy/local/down.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN="$ROOT/deploy/local/.run"
MASTERS=(7000 7001 7002)
SPARE=7003
PROXY_PORT=6380
ADMIN_PORT=9180

die() { echo "up.sh: error: $*" >&2; exit 1; }
say() { echo "up.sh: $*"; }

ensure_redis() {
  if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    return
  fi
  say "redis-server not found; installing it with apt-get"
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "redis-server is missing and this is not root: run 'sudo apt-get install -y redis-server'"
    sudo="sudo"
  fi
  $sudo apt-get update -qq || die "apt-get update failed; install redis-server by hand"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server redis-tools >/dev/null \
    || die "apt-get install redis-server failed; install it by hand"
}

ensure_cargo() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup) first"
}

cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }

start_node() {
  local port=$1 dir="$RUN/$1"
  if [ "$(cli "$port" ping 2>/dev/null)" = "PONG" ]; then
    say "node $port already running"
    return
  fi
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --daemonize yes \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
    --dir "$dir" --save '' --appendonly no --enable-debug-command local \
    --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" \
    || die "redis-server on port $port failed to start (see $dir/redis.log)"
  for _ in $(seq 50); do
    [ "$(cli "$port" ping 2>/dev/null)" = "PONG" ] && return
    sleep 0.1
  done
  die "redis-server on port $port did not answer PING (see $dir/redis.log)"
}

info_field() { cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"; }

create_cluster() {
  if [ "$(info_field 7000 cluster_slots_assigned)" = "16384" ]; then
    say "cluster already created"
  else
    say "creating the cluster on ${MASTERS[*]}"
    local addrs=()
    for p in "${MASTERS[@]}"; do addrs+=("127.0.0.1:$p"); done
    redis-cli --cluster create "${addrs[@]}" --cluster-yes >"$RUN/create.log" 2>&1 \
      || die "redis-cli --cluster create failed (see $RUN/create.log)"
  fi
  if [ "$(info_field "$SPARE" cluster_known_nodes)" != "4" ]; then
    say "joining the empty spare master $SPARE"
    cli "$SPARE" cluster meet 127.0.0.1 7000 >/dev/null || die "CLUSTER MEET from $SPARE failed"
  fi
  for _ in $(seq 150); do
    local ok=1
    for p in "${MASTERS[@]}" "$SPARE"; do
      [ "$(info_field "$p" cluster_state)" = "ok" ] && [ "$(info_field "$p" cluster_known_nodes)" = "4" ] || ok=0
    done
    [ $ok = 1 ] && return
    sleep 0.2
  done
  die "cluster did not reach cluster_state:ok with 4 nodes within 30 s"
}

start_proxy() {
  say "building slotproxy (release)"
  (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
  local pidfile="$RUN/slotproxy.pid"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    say "restarting the running slotproxy"
    kill -TERM "$(cat "$pidfile")" || true
    for _ in $(seq 100); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.1; done
  fi
  # The migration journal goes to ./data, i.e. $RUN/data.
  cd "$RUN"
  nohup "$ROOT/target/release/slotproxy" --config "$ROOT/config/local.toml" \
    >"$RUN/slotproxy.log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 100); do
    if [ "$(cli "$PROXY_PORT" ping 2>/dev/null)" = "PONG" ] \
      && curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1; then
      return
    fi
    kill -0 "$(cat "$pidfile")" 2>/dev/null || die "slotproxy exited at start (see $RUN/slotproxy.log)"
    sleep 0.2
  done
  die "slotproxy did not become ready within 20 s (see $RUN/slotproxy.log)"
}

ensure_redis
ensure_cargo
command -v curl >/dev/null 2>&1 || die "curl not found: apt-get install -y curl"
mkdir -p "$RUN"
for p in "${MASTERS[@]}" "$SPARE"; do start_node "$p"; done
create_cluster
start_proxy

cat <<MSG

slotproxy is running on 127.0.0.1:$PROXY_PORT in front of the cluster 127.0.0.1:7000-7002
(spare empty master on 7003). Logs: $RUN/slotproxy.log

Try:
  redis-cli -p $PROXY_PORT set foo bar
  redis-cli -p $PROXY_PORT mset a 1 b 2 c 3
  redis-cli -p $PROXY_PORT mget a b c
  redis-cli -p $PROXY_PORT dbsize
  redis-benchmark -p $PROXY_PORT -t set,get,incr,lpush,mset -r 100000 -P 16 -n 200000 -q
  curl -s 127.0.0.1:$ADMIN_PORT/readyz
  curl -s 127.0.0.1:$ADMIN_PORT/metrics | grep ^slotproxy_

Rebalance onto the spare 7003 while clients keep working:
  curl -s 127.0.0.1:$ADMIN_PORT/cluster
  curl -s -XPOST 127.0.0.1:$ADMIN_PORT/rebalance -d '{"use_empty_masters":true,"dry_run":true}'
  curl -s -XPOST 127.0.0.1:$ADMIN_PORT/rebalance -d '{"use_empty_masters":true}'
  curl -s 127.0.0.1:$ADMIN_PORT/migrations
  redis-cli --cluster check 127.0.0.1:7000

Stop everything: deploy/local/down.sh
MSG
