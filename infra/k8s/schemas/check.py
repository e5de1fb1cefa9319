"""Validates Kubernetes documents whose kinds kubernetes-validate has no schema for
(KEDA's ScaledObject and TriggerAuthentication, kustomize's Kustomization) against the
JSON schemas in this folder: the fields Troupe uses, with their types."""

import json
import sys
from pathlib import Path

import jsonschema
import yaml

HERE = Path(__file__).parent
SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication.json",
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"): "kustomization.json",
}

failed = False
for name in sys.argv[1:]:
    for doc in yaml.safe_load_all(Path(name).read_text()):
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key not in SCHEMAS:
            print(f"{name}: no schema for {key}", file=sys.stderr)
            failed = True
            continue
        schema = json.loads((HERE / SCHEMAS[key]).read_text())
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
        for e in errors:
            print(f"{name}: {key[1]} {'.'.join(map(str, e.absolute_path))}: {e.message}", file=sys.stderr)
        failed |= bool(errors)
sys.exit(1 if failed else 0)
