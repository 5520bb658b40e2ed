#!/usr/bin/env bash
# Validates deploy/ and dashboards/ without Docker or a Kubernetes cluster (neither runs on our
# machines): Prometheus rules and config with promtool, every shipped slotproxy config with
# `slotproxy --check`, the Kubernetes manifests against the Kubernetes schemas
# (kubernetes-validate), the compose file against the Compose spec (check-jsonschema), the
# systemd unit with systemd-analyze, and the cross-references with check_refs.py.
# Usage: deploy/check.sh [path to the slotproxy binary]   (default: target/debug/slotproxy)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${1:-$ROOT/target/debug/slotproxy}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
die() { echo "deploy/check.sh: error: $*" >&2; exit 1; }
say() { echo "deploy/check.sh: $*"; }

[ -x "$BIN" ] || die "no slotproxy binary at $BIN (cargo build first)"
BIN=$(realpath "$BIN")
command -v promtool >/dev/null || die "promtool missing: apt-get install -y prometheus"
command -v python3 >/dev/null || die "python3 missing: apt-get install -y python3 python3-venv"

say "prometheus rules and config"
promtool check rules "$ROOT/deploy/prometheus/alerts.yml"
sed "s|/etc/prometheus/alerts.yml|$ROOT/deploy/prometheus/alerts.yml|" "$ROOT/deploy/prometheus/prometheus.yml" >"$WORK/prometheus.yml"
promtool check config "$WORK/prometheus.yml"

say "python tools (venv)"
python3 -m venv "$WORK/venv" || die "python3 -m venv failed: apt-get install -y python3-venv"
"$WORK/venv/bin/pip" install -q kubernetes-validate check-jsonschema pyyaml \
  || die "pip install kubernetes-validate check-jsonschema failed"

say "cross-references"
"$WORK/venv/bin/python" "$ROOT/deploy/check_refs.py" "$ROOT" "$WORK/extracted"

say "slotproxy --check on every shipped config"
for config in "$ROOT/config/slotproxy.toml" "$ROOT/config/local.toml" \
  "$ROOT/deploy/docker/slotproxy.toml" "$WORK"/extracted/configmap-*; do
  SLOTPROXY_ADMIN_TOKEN=check-token "$BIN" --config "$config" --check >/dev/null \
    || die "$config is not a valid slotproxy config"
done

say "kubernetes manifests (schemas of Kubernetes 1.30)"
for manifest in "$ROOT"/deploy/kubernetes/*.yaml; do
  case "$manifest" in
    *servicemonitor.yaml) continue ;; # a CRD: checked by check_refs.py
  esac
  "$WORK/venv/bin/kubernetes-validate" --strict --kubernetes-version 1.30 "$manifest"
done

say "compose file (Compose spec)"
"$WORK/venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$ROOT/deploy/docker/compose.yaml"

say "dashboard JSON"
"$WORK/venv/bin/python" -c "import json,sys; json.load(open(sys.argv[1]))" "$ROOT/dashboards/slotproxy.json"

say "systemd unit"
if command -v systemd-analyze >/dev/null; then
  mkdir -p "$WORK/unit"
  sed "s|/usr/local/bin/slotproxy|$BIN|g" "$ROOT/deploy/systemd/slotproxy.service" >"$WORK/unit/slotproxy.service"
  out=$(systemd-analyze verify "$WORK/unit/slotproxy.service" 2>&1 || true)
  # Complaints about this machine's own units are not ours.
  mine=$(echo "$out" | grep "slotproxy.service" || true)
  [ -z "$mine" ] || die "systemd-analyze verify: $mine"
else
  say "systemd-analyze not installed; unit not verified"
fi
say "all deploy files valid"
