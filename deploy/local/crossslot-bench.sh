#!/usr/bin/env bash
# What a command across hash slots costs through slotproxy, next to the same command on one
# Redis, measured in one run on one machine. Starts its own 3-master cluster (127.0.0.1:7120-7122),
# a standalone redis-server (:7130, "one Redis") and a proxy (:6392, admin :9192) under
# deploy/local/.crossbench, and removes them at the end; the demo (up.sh) is never touched.
#
# Workloads (one client, one request at a time, N times each; latency from the request's write
# to its whole reply, over a plain socket):
#   sunionstore-1slot   SUNIONSTORE of two 1,000-member sets, all keys in one slot ({tag}):
#                       the single-slot path, for reference
#   sunionstore-1node   the same with the three keys in different slots of one master
#   sunionstore-3nodes  the same with each key on another master (cross_node = "split")
#   multi4-1node        MULTI, INCR, SADD, RPUSH, HSET, EXEC over four slots of one master
#   multi4-3nodes       the same over keys on three masters
# "one Redis" runs the same commands (same key names) on the standalone server.
#
# Usage: deploy/local/crossslot-bench.sh   Environment: N (2000), BIN (the slotproxy binary;
# default: build target/release/slotproxy).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN="$ROOT/deploy/local/.crossbench"
NODES=(7120 7121 7122)
ONE=7130
PROXY_PORT=6392
ADMIN_PORT=9192
N=${N:-2000}
BIN=${BIN:-}

die() { echo "crossslot-bench.sh: error: $*" >&2; exit 1; }
say() { echo "crossslot-bench.sh: $*" >&2; }
# shellcheck source=deploy/local/lib.sh
. "$ROOT/deploy/local/lib.sh"

PID=""
cleanup() {
  set +e
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  for p in "${NODES[@]}" "$ONE"; do stop_node "$p"; done
  rm -rf "$RUN"
}
trap cleanup EXIT

ensure_redis
command -v python3 >/dev/null || die "python3 is missing (apt-get install -y python3)"
for p in "${NODES[@]}" "$ONE" "$PROXY_PORT" "$ADMIN_PORT"; do
  ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || die "port $p is in use"
done
mkdir -p "$RUN"
for p in "${NODES[@]}"; do start_node "$p"; done
start_node "$ONE" plain
create_cluster "${NODES[@]}"
wait_cluster_ok 3 "${NODES[@]}"

if [ -z "$BIN" ]; then
  ensure_cargo
  say "building slotproxy (release)"
  (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
  BIN="$ROOT/target/release/slotproxy"
fi
[ -x "$BIN" ] || die "no slotproxy binary at $BIN"
cat >"$RUN/proxy.toml" <<TOML
[proxy]
listen = "127.0.0.1:$PROXY_PORT"
worker_threads = 1

[admin]
listen = "127.0.0.1:$ADMIN_PORT"

[cluster]
seeds = ["127.0.0.1:${NODES[0]}"]
TOML
"$BIN" --config "$RUN/proxy.toml" >"$RUN/slotproxy.log" 2>&1 &
PID=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 && break
  kill -0 "$PID" 2>/dev/null || die "slotproxy exited at start: $(tail -5 "$RUN/slotproxy.log")"
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 || die "slotproxy not ready in 20 s"

python3 - "$PROXY_PORT" "$ONE" "${NODES[0]}" "$N" <<'EOF'
import socket, statistics, sys, time

proxy_port, one_port, seed_port, n = (int(a) for a in sys.argv[1:5])


def encode(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def reply(self):
        line = self.line()
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind in b"+:":
            return rest
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            while len(self.buf) < size + 2:
                self.buf += self.sock.recv(65536)
            data, self.buf = self.buf[:size], self.buf[size + 2:]
            return data
        if kind == b"*":
            return [self.reply() for _ in range(max(int(rest), 0))]
        raise RuntimeError("unexpected reply %r" % line)

    def call(self, *commands):
        self.sock.sendall(b"".join(encode(*c) for c in commands))
        return [self.reply() for _ in commands]


seed = Conn(seed_port)
owner = {}
for start, end, master, *_ in seed.call(("CLUSTER", "SLOTS"))[0]:
    for slot in range(int(start), int(end) + 1):
        owner[slot] = int(master[1])
masters = sorted(set(owner.values()))


def key_on(master, prefix, avoid):
    """A key on `master`, in a slot none of `avoid` is in."""
    for i in range(100000):
        key = "%s:%d" % (prefix, i)
        slot = int(seed.call(("CLUSTER", "KEYSLOT", key))[0])
        if owner[slot] == master and slot not in avoid:
            avoid.add(slot)
            return key
    raise RuntimeError("no key found")


def keys(layout, prefix, count):
    avoid = set()
    if layout == "1slot":
        return ["{%s}%d" % (prefix, i) for i in range(count)]
    if layout == "1node":
        return [key_on(masters[0], prefix, avoid) for _ in range(count)]
    return [key_on(masters[i % len(masters)], prefix, avoid) for i in range(count)]


def sunionstore(layout):
    dest, a, b = keys(layout, "su" + layout, 3)
    members_a = ["a%d" % i for i in range(1000)]
    members_b = ["b%d" % i for i in range(500)] + ["a%d" % i for i in range(500)]
    setup = [("FLUSHALL",), ("SADD", a, *members_a), ("SADD", b, *members_b)]
    return setup, [("SUNIONSTORE", dest, a, b)]


def multi4(layout):
    k = keys(layout, "m" + layout, 4)
    body = [("MULTI",), ("INCR", k[0]), ("SADD", k[1], "x"), ("RPUSH", k[2], "y"),
            ("HSET", k[3], "f", "v"), ("EXEC",)]
    return [("FLUSHALL",)], body


def measure(port, setup, body):
    conn = Conn(port)
    conn.call(*setup)
    times = []
    for i in range(n + n // 10):
        start = time.perf_counter()
        last = conn.call(*body)
        if i >= n // 10:  # the first tenth warms up
            times.append((time.perf_counter() - start) * 1e6)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1], last


print("%-20s %12s %12s %12s %12s %8s" % ("workload", "one p50 us", "one p99 us",
                                         "proxy p50 us", "proxy p99 us", "p50 x"))
for name, make in [("sunionstore-1slot", lambda: sunionstore("1slot")),
                   ("sunionstore-1node", lambda: sunionstore("1node")),
                   ("sunionstore-3nodes", lambda: sunionstore("3nodes")),
                   ("multi4-1node", lambda: multi4("1node")),
                   ("multi4-3nodes", lambda: multi4("3nodes"))]:
    setup, body = make()
    one = measure(one_port, setup, body)
    proxy = measure(proxy_port, setup, body)
    if one[2] != proxy[2]:
        sys.exit("%s: the proxy answered %r, one Redis %r" % (name, proxy[2], one[2]))
    print("%-20s %12.0f %12.0f %12.0f %12.0f %8.1f" % (name, one[0], one[1], proxy[0], proxy[1],
                                                       proxy[0] / one[0]))
print("one = a standalone redis-server; proxy = slotproxy in front of 3 masters; "
      "%d requests each, one at a time" % n)
EOF
