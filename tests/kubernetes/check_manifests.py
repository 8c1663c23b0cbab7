#!/usr/bin/env python3
"""Checks the Kubernetes manifests in a directory (argv[1]): yamllint, structure, and airl's own rules."""
import glob
import os
import re
import shutil
import subprocess
import sys

import yaml

LINT = "{extends: default, rules: {line-length: {max: 120}, document-start: disable}}"
KINDS = {"ConfigMap": "v1", "Service": "v1", "Deployment": "apps/v1", "StatefulSet": "apps/v1"}
POLICIES = {"fail_open", "fail_closed", "local"}


def main():
    if len(sys.argv) != 2:
        print("usage: check_manifests.py DIR")
        return 2
    files = sorted(glob.glob(os.path.join(sys.argv[1], "*.yaml")))
    errors = []
    if not files:
        errors.append("no *.yaml files in " + sys.argv[1])
    if shutil.which("yamllint") is None:
        errors.append("yamllint is not installed")
    else:
        lint = subprocess.run(["yamllint", "-d", LINT] + files, capture_output=True, text=True)
        if lint.returncode != 0:
            errors.append("yamllint:\n" + lint.stdout + lint.stderr)
    docs = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                docs += [(path, d) for d in yaml.safe_load_all(f) if d is not None]
        except yaml.YAMLError as e:
            errors.append(f"{path}: {e}")
    workloads, services, configmaps = [], [], {}
    for path, d in docs:
        if not isinstance(d, dict):
            errors.append(f"{path}: a document is not a mapping")
            continue
        name = (d.get("metadata") or {}).get("name")
        kind = d.get("kind")
        where = f"{path}: {kind}/{name}"
        if not d.get("apiVersion") or not kind or not name:
            errors.append(f"{where}: needs apiVersion, kind and metadata.name")
            continue
        if kind not in KINDS:
            errors.append(f"{where}: unknown kind")
            continue
        if d["apiVersion"] != KINDS[kind]:
            errors.append(f"{where}: apiVersion must be {KINDS[kind]}")
        if kind == "ConfigMap":
            configmaps[name] = d.get("data") or {}
        elif kind == "Service":
            services.append((where, d))
        else:
            workloads.append((where, d))
    ports_of = {}
    for where, d in workloads:
        spec = d.get("spec") or {}
        tmpl = spec.get("template") or {}
        labels = (tmpl.get("metadata") or {}).get("labels") or {}
        match = (spec.get("selector") or {}).get("matchLabels") or {}
        if not match or any(labels.get(k) != v for k, v in match.items()):
            errors.append(f"{where}: selector.matchLabels do not match the template labels")
        pod = tmpl.get("spec") or {}
        containers = pod.get("containers") or []
        if not containers:
            errors.append(f"{where}: no containers")
        ports = set()
        for c in containers:
            cw = f"{where} container {c.get('name')}"
            if not c.get("image"):
                errors.append(f"{cw}: no image")
            res = c.get("resources") or {}
            if not res.get("requests") or not res.get("limits"):
                errors.append(f"{cw}: needs resources.requests and resources.limits")
            for p in c.get("ports") or []:
                ports.add(p.get("containerPort"))
                if p.get("name"):
                    ports.add(p["name"])
        ports_of[where] = (labels, ports)
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "airl-gateway":
            annotations = (tmpl.get("metadata") or {}).get("annotations") or {}
            check_gateway(where, pod, annotations, containers, configmaps, errors)
    for where, d in services:
        spec = d.get("spec") or {}
        selector = spec.get("selector") or {}
        targets = [(w, p) for w, (labels, p) in ports_of.items()
                   if selector and all(labels.get(k) == v for k, v in selector.items())]
        if not targets:
            errors.append(f"{where}: selector matches no workload's template labels")
            continue
        for port in spec.get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            if not any(target in p for _, p in targets):
                errors.append(f"{where}: targetPort {target} is no container port of its workload")
    for e in errors:
        print("FAIL:", e)
    if errors:
        return 1
    print(f"ok: {len(docs)} documents in {len(files)} files pass")
    return 0


def check_gateway(where, pod, annotations, containers, configmaps, errors):
    c = containers[0] if containers else {}
    args = [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]

    def flag(name, default):
        return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else default
    # The probes and the scrape go to the admin listener (--admin-port), which API load cannot starve.
    admin = int(flag("--admin-port", "8081"))
    admin_names = {p.get("name") for p in c.get("ports") or [] if p.get("containerPort") == admin} - {None}
    if not admin_names and admin not in {p.get("containerPort") for p in c.get("ports") or []}:
        errors.append(f"{where}: the admin port {admin} is not a container port")
    for probe, path in (("readinessProbe", "/healthz"), ("livenessProbe", "/livez")):
        get = (c.get(probe) or {}).get("httpGet") or {}
        if get.get("path") != path or (get.get("port") != admin and get.get("port") not in admin_names):
            errors.append(f"{where}: {probe} must be httpGet {path} on the admin port {admin}")
    scrape = annotations.get("prometheus.io/port")
    if scrape is not None and str(scrape) != str(admin):
        errors.append(f"{where}: prometheus.io/port {scrape} must be the admin port {admin}")
    for v in pod.get("volumes") or []:
        cm = (v.get("configMap") or {}).get("name")
        if cm is None:
            continue
        conf = configmaps.get(cm, {}).get("gateway.conf", "")
        if cm not in configmaps:
            errors.append(f"{where}: mounts ConfigMap {cm}, which is not defined")
        elif not re.search(r"^\s*key\s+\S+\s+\S+", conf, re.M):
            errors.append(f"{where}: ConfigMap {cm} has no gateway.conf with a 'key' line")
        elif not re.search(r"^\s*model\s+\S+", conf, re.M):
            errors.append(f"{where}: ConfigMap {cm}'s gateway.conf serves no model (a 'model' line)")
    grace_ms = int(flag("--shutdown-grace-ms", "10000"))
    grace_s = pod.get("terminationGracePeriodSeconds", 30)
    if not grace_s * 1000 > grace_ms:
        errors.append(f"{where}: terminationGracePeriodSeconds {grace_s} must exceed --shutdown-grace-ms {grace_ms}")
    policy = flag("--failure-policy", "fail_open")
    if policy not in POLICIES:
        errors.append(f"{where}: --failure-policy {policy} is not one of {sorted(POLICIES)}")


if __name__ == "__main__":
    sys.exit(main())
