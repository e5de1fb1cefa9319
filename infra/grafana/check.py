"""Checks the Grafana dashboards in this folder: each is valid JSON, its panels query a
Prometheus data source, and every non-row panel has at least one query. That every
query names a metric Troupe exports is checked against a real scrape by
tests/all/metrics.rs (it needs a running Troupe)."""

import json
import sys
from pathlib import Path

failed = False
for path in sorted(Path(__file__).parent.glob("*.json")):
    try:
        dash = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        print(f"{path}: not JSON: {e}", file=sys.stderr)
        failed = True
        continue
    panels = [p for p in dash.get("panels", []) if p.get("type") != "row"]
    if not panels:
        print(f"{path}: no panels", file=sys.stderr)
        failed = True
    for p in panels:
        where = f"{path}: panel {p.get('title')!r}"
        if p.get("datasource", {}).get("type") != "prometheus":
            print(f"{where}: its data source is not Prometheus", file=sys.stderr)
            failed = True
        exprs = [t.get("expr", "").strip() for t in p.get("targets", [])]
        if not exprs or not all(exprs):
            print(f"{where}: a query is missing", file=sys.stderr)
            failed = True
    print(f"{path.relative_to(Path.cwd())}: {len(panels)} panels ok")
sys.exit(1 if failed else 0)
