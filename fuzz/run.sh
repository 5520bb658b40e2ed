#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: fuzz/run.sh [SECONDS per target, default 60].
#
# Needs the nightly toolchain (cargo fuzz builds with sanitizers) and installs cargo-fuzz when
# it is missing. The command router target gets a real `COMMAND` reply, saved from a
# throwaway redis-server on a free loopback port. New inputs the fuzzer finds go to
# fuzz/corpus-work/ (not committed); the committed regression corpus is fuzz/seeds/, which
# `cargo test --test fuzz_corpus` also replays on stable. A crash leaves its input in
# fuzz/artifacts/TARGET/ and fails this script; fix the bug, then copy the input into
# fuzz/seeds/TARGET/ so that it stays fixed.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET=${1:-60}
TARGETS=(request_decoder command_router reply_scanner)

die() { echo "fuzz/run.sh: error: $*" >&2; exit 1; }

cargo +nightly --version >/dev/null 2>&1 \
  || die "the nightly toolchain is missing (cargo fuzz needs it): rustup toolchain install nightly"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: installing cargo-fuzz"
  cargo install cargo-fuzz --locked --quiet || die "cargo install cargo-fuzz failed"
fi
command -v redis-server >/dev/null 2>&1 || die "redis-server not found: apt-get install -y redis-server"

# A real node's command table for the router target.
port=""
for p in $(seq 7190 7199); do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[ -n "$port" ] || die "no free port in 7190-7199 for the throwaway redis-server"
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  >/dev/null 2>&1 &
node=$!
trap 'kill "$node" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
  sleep 0.1
done
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'COMMAND\r\nQUIT\r\n' >&3
timeout 10 cat <&3 >commands.resp || die "could not read COMMAND from redis-server on $port"
exec 3>&-
kill "$node"
head -c 2 commands.resp | grep -q '^\*' || die "COMMAND did not reply with an array"

for target in "${TARGETS[@]}"; do
  mkdir -p "corpus-work/$target"
  echo "fuzz/run.sh: $target for ${SECONDS_PER_TARGET}s"
  SLOTPROXY_FUZZ_COMMANDS="$PWD/commands.resp" cargo +nightly fuzz run "$target" \
    "corpus-work/$target" "seeds/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 2>&1 | grep -E '^(stat::number_of_executed_units|stat::new_units_added|==|SUMMARY|thread|panicked|Done)' || true
  if [ -n "$(ls -A "artifacts/$target" 2>/dev/null)" ]; then
    die "$target found a crash: see fuzz/artifacts/$target/ (reproduce: cargo +nightly fuzz run $target fuzz/artifacts/$target/FILE)"
  fi
done
echo "fuzz/run.sh: no crash in ${#TARGETS[@]} targets"
