#!/usr/bin/env bash
# Runs redis-py's own test suite (a pinned release, from PyPI) against the local demo proxy as
# if it were a plain Redis server, prints the pass rate per file, and fails when a test fails
# that is not in deploy/local/redis-py-known-failures.txt (each entry there says why).
# Starts the local demo if it is not running. Usage: deploy/local/redis-py-compat.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN="$ROOT/deploy/local/.run"
VERSION=5.2.1
VENV="$RUN/redis-py-venv"
SRC="$RUN/redis-$VERSION"
KNOWN="$ROOT/deploy/local/redis-py-known-failures.txt"
PORT=6380
FILES=(test_commands test_pipeline test_pubsub test_scripting test_lock test_encoding
  test_function test_helpers test_connection test_connection_pool test_retry
  test_command_parser test_monitor test_credentials)

die() { echo "redis-py-compat: $*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is missing (apt-get install -y python3 python3-venv)"
if ! redis-cli -p "$PORT" ping >/dev/null 2>&1; then
  "$ROOT/deploy/local/up.sh" >/dev/null || die "could not start the local demo"
fi
mkdir -p "$RUN"
if [ ! -x "$VENV/bin/pytest" ]; then
  python3 -m venv "$VENV" || die "cannot create a venv (apt-get install -y python3-venv)"
  "$VENV/bin/pip" install -q "pytest==8.3.4" "pytest-asyncio==0.24.0" "pytest-timeout==2.3.1" \
    mock packaging "redis==$VERSION" || die "pip install failed (is PyPI reachable?)"
fi
if [ ! -d "$SRC/tests" ]; then
  # The tests ship in the source distribution only.
  "$VENV/bin/pip" download -q --no-binary :all: --no-deps "redis==$VERSION" -d "$RUN" \
    || die "cannot download redis-$VERSION.tar.gz from PyPI"
  tar -xzf "$RUN/redis-$VERSION.tar.gz" -C "$RUN"
fi

paths=()
for f in "${FILES[@]}"; do paths+=("tests/$f.py"); done
report="$RUN/redis-py-report.xml"
(cd "$SRC" && timeout 1200 "$VENV/bin/python" -m pytest "${paths[@]}" -q -p no:cacheprovider \
  -W ignore --timeout 30 --redis-url="redis://127.0.0.1:$PORT" --junitxml="$report" \
  >"$RUN/redis-py.log" 2>&1) || true
[ -s "$report" ] || die "pytest produced no report (see $RUN/redis-py.log)"

python3 "$ROOT/deploy/local/known-failures.py" "$report" "$KNOWN"
