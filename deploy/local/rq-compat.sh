#!/usr/bin/env bash
# Runs the own test suite of RQ (python-rq, a job queue written for one Redis: it enqueues with
# MULTI over a job hash, a queue list and registries, and guards dependencies with WATCH)
# against the local demo proxy, prints the pass rate per file, and fails when a test fails that
# is not in deploy/local/rq-known-failures.txt (each entry there says why).
# RQ's tests connect to localhost:6379, database 4 or the next empty one; the test venv gets
# deploy/local/rq/redirect_to_proxy.py (a .pth line), which sends those connections to the
# proxy's database 0, in the tests and in the worker processes they start. Nothing else of RQ
# or its tests is changed. Starts the local demo if it is not running.
# Usage: deploy/local/rq-compat.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUN="$ROOT/deploy/local/.run"
VERSION=2.0.0
VENV="$RUN/rq-venv"
SRC="$RUN/rq-$VERSION"
KNOWN="$ROOT/deploy/local/rq-known-failures.txt"
PORT=6380

die() { echo "rq-compat: $*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is missing (apt-get install -y python3 python3-venv)"
if ! redis-cli -p "$PORT" ping >/dev/null 2>&1; then
  "$ROOT/deploy/local/up.sh" >/dev/null || die "could not start the local demo"
fi
mkdir -p "$RUN"
if [ ! -x "$VENV/bin/pytest" ]; then
  python3 -m venv "$VENV" || die "cannot create a venv (apt-get install -y python3-venv)"
  "$VENV/bin/pip" install -q "pytest==8.3.4" "pytest-timeout==2.3.1" "redis==5.2.1" \
    "click==8.1.7" "psutil==6.1.0" || die "pip install failed (is PyPI reachable?)"
fi
if [ ! -d "$SRC/tests" ]; then
  # The tests ship in the source distribution only.
  "$VENV/bin/pip" download -q --no-binary :all: --no-deps "rq==$VERSION" -d "$RUN" \
    || die "cannot download rq-$VERSION.tar.gz from PyPI"
  tar -xzf "$RUN/rq-$VERSION.tar.gz" -C "$RUN"
  "$VENV/bin/pip" install -q --no-deps "$SRC" || die "cannot install rq-$VERSION"
fi
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cp "$ROOT/deploy/local/rq/redirect_to_proxy.py" "$site/"
echo "import redirect_to_proxy" >"$site/slotproxy_redirect.pth"

# The tests look for an empty database: start from one.
redis-cli -p "$PORT" flushall >/dev/null || die "FLUSHALL through the demo proxy failed"
report="$RUN/rq-report.xml"
# The workers the tests start run `rq`/`rqworker` from the venv.
(cd "$SRC" && SLOTPROXY_REDIRECT="127.0.0.1:$PORT" PATH="$VENV/bin:$PATH" timeout 900 \
  "$VENV/bin/python" -m pytest tests -q -p no:cacheprovider -W ignore --timeout 60 \
  --junitxml="$report" >"$RUN/rq.log" 2>&1) || true
[ -s "$report" ] || die "pytest produced no report (see $RUN/rq.log)"
redis-cli -p "$PORT" flushall >/dev/null || true

python3 "$ROOT/deploy/local/known-failures.py" "$report" "$KNOWN"
