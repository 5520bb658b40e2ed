#!/usr/bin/env bash
# Starts the local demo: a Redis Cluster of 3 masters on 127.0.0.1:7000-7002, one empty spare
# master on 7003 (joined, no slots), one more cluster-enabled redis-server on 7004 that is not
# part of the cluster (for `slotproxy ctl add-node`), and slotproxy on 127.0.0.1:6380 (admin
# on :9180).
# Installs redis-server when it is missing. Safe to run again: running nodes are kept, the
# proxy is rebuilt and restarted. Stop everything with deploy/local/down.sh.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN="$ROOT/deploy/local/.run"
MASTERS=(7000 7001 7002)
SPARE=7003
LOOSE=7004
PROXY_PORT=6380
ADMIN_PORT=9180

die() { echo "up.sh: error: $*" >&2; exit 1; }
say() { echo "up.sh: $*"; }
# shellcheck source=deploy/local/lib.sh
. "$ROOT/deploy/local/lib.sh"

create_demo_cluster() {
  create_cluster "${MASTERS[@]}"
  if [ "$(info_field "$SPARE" cluster_known_nodes)" != "4" ]; then
    say "joining the empty spare master $SPARE"
    cli "$SPARE" cluster meet 127.0.0.1 7000 >/dev/null || die "CLUSTER MEET from $SPARE failed"
  fi
  wait_cluster_ok 4 "${MASTERS[@]}" "$SPARE"
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
for p in "${MASTERS[@]}" "$SPARE" "$LOOSE"; do start_node "$p"; done
create_demo_cluster
start_proxy

cat <<MSG

slotproxy is running on 127.0.0.1:$PROXY_PORT in front of the cluster 127.0.0.1:7000-7002
(spare empty master on 7003; 7004 runs outside the cluster). Logs: $RUN/slotproxy.log

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

Or with the operator CLI (see README, "Operating"):
  target/release/slotproxy ctl status
  target/release/slotproxy ctl add-node 127.0.0.1:$LOOSE
  target/release/slotproxy ctl rebalance --use-empty-masters
  target/release/slotproxy ctl check

Stop everything: deploy/local/down.sh
MSG
