# Shell helpers shared by deploy/local/up.sh and deploy/local/bench.sh: install redis-server when
# it is missing, start cluster nodes on loopback and wait for a healthy cluster.
# Callers define die() and say() and set RUN (the state directory) before sourcing this file.

ensure_redis() {
  if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 \
    && command -v redis-benchmark >/dev/null 2>&1; then
    return
  fi
  say "redis-server not found; installing it with apt-get"
  apt_install redis-server redis-tools || die "apt-get install redis-server failed; install it by hand (sudo apt-get install -y redis-server)"
}

# apt_install PACKAGE...: installs Debian packages as root or through sudo; fails (status 1,
# with the reason on stderr) when neither is possible or apt-get fails.
apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { say "cannot install $*: not root and no sudo"; return 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq || return 1
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

ensure_cargo() {
  command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (rustup) first"
}

cli() { redis-cli -h 127.0.0.1 -p "$1" "${@:2}"; }

# start_node PORT [plain]: a cluster-enabled (or, with "plain", a standalone) persistence-free
# redis-server with its state in $RUN/PORT.
start_node() {
  local port=$1 dir="$RUN/$1" mode=(--cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000)
  [ "${2:-}" = plain ] && mode=()
  if [ "$(cli "$port" ping 2>/dev/null)" = "PONG" ]; then
    say "node $port already running"
    return
  fi
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --daemonize yes "${mode[@]}" \
    --dir "$dir" --save '' --appendonly no --enable-debug-command local \
    --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" \
    || die "redis-server on port $port failed to start (see $dir/redis.log)"
  for _ in $(seq 50); do
    [ "$(cli "$port" ping 2>/dev/null)" = "PONG" ] && return
    sleep 0.1
  done
  die "redis-server on port $port did not answer PING (see $dir/redis.log)"
}

# stop_node PORT: shuts down a node started by start_node.
stop_node() {
  local port=$1 pidfile="$RUN/$1/redis.pid"
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || return 0
  cli "$port" shutdown nosave >/dev/null 2>&1 || kill -TERM "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
}

info_field() { cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"; }

# create_cluster PORT...: one master per port, all 16384 slots assigned; no-op when done.
create_cluster() {
  if [ "$(info_field "$1" cluster_slots_assigned)" = "16384" ]; then
    say "cluster already created"
    return
  fi
  say "creating the cluster on $*"
  local addrs=()
  for p in "$@"; do addrs+=("127.0.0.1:$p"); done
  redis-cli --cluster create "${addrs[@]}" --cluster-yes >"$RUN/create.log" 2>&1 \
    || die "redis-cli --cluster create failed (see $RUN/create.log)"
}

# wait_cluster_ok KNOWN PORT...: waits until every port reports cluster_state:ok and KNOWN nodes.
wait_cluster_ok() {
  local known=$1
  shift
  for _ in $(seq 150); do
    local ok=1
    for p in "$@"; do
      [ "$(info_field "$p" cluster_state)" = "ok" ] && [ "$(info_field "$p" cluster_known_nodes)" = "$known" ] || ok=0
    done
    [ $ok = 1 ] && return
    sleep 0.2
  done
  die "cluster did not reach cluster_state:ok with $known nodes within 30 s"
}
