#!/usr/bin/env bash
# Compares redis-benchmark through slotproxy with the cluster itself (redis-benchmark --cluster),
# in one run, and reports the proxy's CPU time per operation (utime+stime from /proc).
# Starts the local demo if it is not running. Usage: deploy/local/bench.sh [requests]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-200000}
PIDFILE="$ROOT/deploy/local/.run/slotproxy.pid"

if ! redis-cli -p 6380 ping >/dev/null 2>&1; then
  "$ROOT/deploy/local/up.sh" >/dev/null
fi
PID=$(cat "$PIDFILE")
TICK=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
rps() { sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' | tail -1; }

common=(-c 50 -d 64 -r 100000 -q)
printf '%-6s %-4s %14s %14s %7s %16s\n' test P "direct ops/s" "proxy ops/s" ratio "proxy CPU us/op"
for P in 1 16; do
  for T in set get; do
    direct=$(redis-benchmark --cluster -h 127.0.0.1 -p 7000 -t "$T" -P "$P" -n "$N" "${common[@]}" 2>/dev/null | tr '\r' '\n' | rps)
    before=$(cpu_ticks)
    proxied=$(redis-benchmark -h 127.0.0.1 -p 6380 -t "$T" -P "$P" -n "$N" "${common[@]}" 2>/dev/null | tr '\r' '\n' | rps)
    after=$(cpu_ticks)
    awk -v t="$T" -v p="$P" -v d="$direct" -v x="$proxied" -v c=$((after - before)) -v hz="$TICK" -v n="$N" \
      'BEGIN { printf "%-6s %-4s %14.0f %14.0f %7.2f %16.2f\n", t, p, d, x, x / d, c / hz * 1e6 / n }'
  done
done
