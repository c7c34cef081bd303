#!/usr/bin/env python3
"""Offline helpers for tests/deploy.rs, run with the Python of scripts/install-test-deps.sh's venv.

  k8s.py json FILE               the YAML documents of FILE as one JSON array
  k8s.py validate VERSION FILE…  validates every resource of the files against Kubernetes
                                 VERSION: core kinds with kubernetes-validate, strictly (unknown
                                 fields are errors); prometheus-operator kinds (ServiceMonitor,
                                 PrometheusRule) with @kubernetes-models/prometheus-operator,
                                 through node. One line per resource; exit status 1 if any fails.
"""
import json
import os
import subprocess
import sys

import yaml
from kubernetes_validate import utils

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.environ.get("GJE_TEST_TOOLS", "/opt/gitlab-jobs-exporter-test-tools")


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def validate(version, paths):
    failed = False
    crds = []
    for path in paths:
        for doc in docs(path):
            name = f"{path}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            if doc.get("apiVersion", "").startswith("monitoring.coreos.com/"):
                crds.append((name, doc))
                continue
            try:
                utils.validate(doc, version, strict=True)
                print(f"ok   {name} (Kubernetes {version}, strict)")
            except utils.ValidationError as e:
                failed = True
                where = "/".join(str(p) for p in e.path)
                print(f"FAIL {name}: {where}: {e.message}")
            except utils.SchemaNotFoundError as e:
                failed = True
                print(f"FAIL {name}: {e.message}")
    if crds:
        out = subprocess.run(
            ["node", os.path.join(HERE, "crds.mjs"), os.path.join(TOOLS, "node", "node_modules")],
            input=json.dumps(crds), capture_output=True, text=True)
        sys.stdout.write(out.stdout)
        sys.stderr.write(out.stderr)
        failed |= out.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["json"] and len(sys.argv) == 3:
        json.dump(docs(sys.argv[2]), sys.stdout)
    elif sys.argv[1:2] == ["validate"] and len(sys.argv) > 3:
        sys.exit(validate(sys.argv[2], sys.argv[3:]))
    else:
        sys.exit(__doc__)
