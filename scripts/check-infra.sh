#!/usr/bin/env bash
# Checks the deployment templates: the CloudFormation template is current with
# spin.toml (infra/aws/render.py) and passes cfn-lint; the Kubernetes manifests pass
# schema validation (core kinds strictly; KEDA's kinds against infra/k8s/schemas); the
# Grafana dashboard is valid JSON with a query in every panel (tests/all/metrics.rs
# checks its metric names against a real scrape); the Dockerfile parses and names
# scripts, packages and features that exist.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
./scripts/setup-scale-out.sh
venv="${TROUPE_PY_ENV:-$HOME/.cache/troupe-tools/py}"
"$venv/bin/python" infra/aws/render.py --check
"$venv/bin/cfn-lint" infra/aws/template.yaml
echo "infra/aws/template.yaml: cfn-lint ok"
"$venv/bin/kubernetes-validate" --strict --quiet infra/k8s/config.yaml infra/k8s/worker.yaml infra/k8s/functions.yaml
"$venv/bin/python" infra/k8s/schemas/check.py infra/k8s/keda.yaml infra/k8s/kustomization.yaml
echo "infra/k8s: schemas ok"
"$venv/bin/python" infra/grafana/check.py
"$venv/bin/python" infra/check_dockerfile.py
