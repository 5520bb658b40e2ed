#!/usr/bin/env bash
# Stops what deploy/local/up.sh started (slotproxy and the nodes on 7000-7004) and removes
# their state, so the next up.sh starts a fresh cluster.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN="$ROOT/deploy/local/.run"

if [ -f "$RUN/slotproxy.pid" ]; then
  pid=$(cat "$RUN/slotproxy.pid")
  if kill -0 "$pid" 2>/dev/null; then
    echo "down.sh: stopping slotproxy (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
fi
for port in 7000 7001 7002 7003 7004; do
  pidfile="$RUN/$port/redis.pid"
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    echo "down.sh: stopping redis-server on $port"
    redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || kill -TERM "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    # A node that refused SHUTDOWN (a password was set on it, say) is stopped anyway.
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
done
rm -rf "$RUN"
echo "down.sh: stopped"
