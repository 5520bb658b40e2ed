#!/usr/bin/env python3
"""Structural checks of deploy/ that no schema covers: files the compose stack and the
Dockerfile refer to exist, the ServiceMonitor matches the admin Service, the Deployment's
probes and ports line up, and the ConfigMap's embedded config is extracted for
`slotproxy --check`. Usage: check_refs.py REPO_ROOT OUT_DIR"""
import os
import sys

import yaml

root, out = sys.argv[1], sys.argv[2]
deploy = os.path.join(root, "deploy")
problems = []


def need(cond, message):
    if not cond:
        problems.append(message)


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


# Compose: every relative bind mount and the build context exist.
compose_path = os.path.join(deploy, "docker", "compose.yaml")
compose = load_all(compose_path)[0]
compose_dir = os.path.dirname(compose_path)
for name, service in compose["services"].items():
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("."):
            need(os.path.exists(os.path.join(compose_dir, source)), f"compose {name}: {source} does not exist")
    build = service.get("build")
    if build:
        context = os.path.join(compose_dir, build["context"])
        need(os.path.isdir(context), f"compose {name}: build context {context} missing")
        need(os.path.isfile(os.path.join(context, build["dockerfile"])), f"compose {name}: Dockerfile missing")
need({"slotproxy", "prometheus", "grafana", "cluster-create"} <= set(compose["services"]), "compose: a service is missing")
need(sum(1 for s in compose["services"] if s.startswith("redis-")) == 6, "compose: 6 redis nodes expected")

# Dockerfile: COPY sources exist (relative to the repository root, the build context).
with open(os.path.join(deploy, "docker", "Dockerfile")) as f:
    for line in f:
        parts = line.split()
        if parts and parts[0] == "COPY" and not any(p.startswith("--from") for p in parts):
            for source in parts[1:-1]:
                need(os.path.exists(os.path.join(root, source)), f"Dockerfile: COPY {source} does not exist")
        if parts[:1] == ["USER"]:
            need(parts[1] != "root" and parts[1] != "0", "Dockerfile: runs as root")

# Kubernetes: labels, ports and probes line up.
k8s = os.path.join(deploy, "kubernetes")
docs = []
for name in sorted(os.listdir(k8s)):
    if name.endswith(".yaml"):
        docs += load_all(os.path.join(k8s, name))
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
deployment = by_kind["Deployment"][0]
pod = deployment["spec"]["template"]
container = pod["spec"]["containers"][0]
port_names = {p["name"] for p in container["ports"]}
need(deployment["spec"]["replicas"] >= 2, "Deployment: at least 2 replicas")
need(container["readinessProbe"]["httpGet"]["path"] == "/readyz", "Deployment: readiness must use /readyz")
need(container["livenessProbe"]["httpGet"]["path"] == "/healthz", "Deployment: liveness must use /healthz")
need(container["securityContext"]["readOnlyRootFilesystem"], "Deployment: read-only root filesystem")
need("resources" in container, "Deployment: resources")
need(pod["spec"]["securityContext"]["runAsNonRoot"], "Deployment: runAsNonRoot")
config_names = {c["metadata"]["name"] for c in by_kind["ConfigMap"]}
for volume in pod["spec"]["volumes"]:
    if "configMap" in volume:
        need(volume["configMap"]["name"] in config_names, f"Deployment: ConfigMap {volume['configMap']['name']} missing")
for service in by_kind["Service"]:
    selector = service["spec"]["selector"]
    need(all(pod["metadata"]["labels"].get(k) == v for k, v in selector.items()), f"Service {service['metadata']['name']}: selector matches no pod")
    for port in service["spec"]["ports"]:
        need(port["targetPort"] in port_names, f"Service {service['metadata']['name']}: targetPort {port['targetPort']} unknown")
monitor = by_kind["ServiceMonitor"][0]
need(monitor["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor: apiVersion")
wanted = monitor["spec"]["selector"]["matchLabels"]
matched = [s for s in by_kind["Service"] if all(s["metadata"]["labels"].get(k) == v for k, v in wanted.items())]
need(len(matched) == 1, "ServiceMonitor: must select exactly the admin Service")
for endpoint in monitor["spec"]["endpoints"]:
    need(matched and any(p["name"] == endpoint["port"] for p in matched[0]["spec"]["ports"]), "ServiceMonitor: endpoint port not on the Service")
    need(endpoint.get("path") == "/metrics", "ServiceMonitor: path must be /metrics")

# The ConfigMap's config, for `slotproxy --check`.
os.makedirs(out, exist_ok=True)
for config_map in by_kind["ConfigMap"]:
    for key, text in config_map["data"].items():
        with open(os.path.join(out, f"configmap-{key}"), "w") as f:
            f.write(text)

for p in problems:
    print(f"deploy check: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
