#!/usr/bin/python3
"""Checks the dashboard and the alert rules against the metrics contract in docs/deploy.md, and
optionally a live /metrics scrape against the contract.

usage: check_monitoring.py contract DOCS.md RULES.yaml DASHBOARD.json OUT_RULES.yaml
         every ktls_* name used by the rules and the dashboard is in the contract (histogram
         series _bucket/_sum/_count of a contract histogram count); the dashboard is well formed
         (unique panel ids, a datasource on every target); its queries are written to OUT_RULES
         as recording rules (Grafana variables replaced) for `promtool check rules` to parse.
       check_monitoring.py scrape DOCS.md METRICS.txt
         every contract family is in the exposition with its type; prints what is missing.
"""
import json
import re
import sys

import yaml

NAME = re.compile(r"\bktls_[a-z0-9_]+")


def load_contract(docs):
    text = open(docs).read()
    start = text.index("## Metrics contract")
    section = text[start:text.find("\n## ", start + 1)]
    contract = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*`(ktls_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram)\s*\|", line)
        if m:
            contract[m.group(1)] = m.group(2)
    if len(contract) < 10:
        sys.exit(f"contract table in {docs} has only {len(contract)} metrics: parse error?")
    return contract


def base_name(name, contract):
    if name in contract:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and contract.get(name[: -len(suffix)]) == "histogram":
            return name[: -len(suffix)]
    return None


def contract_cmd(docs, rules_path, dash_path, out_rules):
    contract = load_contract(docs)
    bad = []
    rules = yaml.safe_load(open(rules_path))
    for g in rules["groups"]:
        for r in g["rules"]:
            for n in NAME.findall(r["expr"]):
                if not base_name(n, contract):
                    bad.append(f"rule {r.get('alert', r.get('record'))}: {n} is not in the contract")
    dash = json.load(open(dash_path))
    exprs = []
    ids = set()
    for p in dash["panels"]:
        if p["id"] in ids:
            bad.append(f"dashboard: duplicate panel id {p['id']}")
        ids.add(p["id"])
        if not p.get("targets"):
            bad.append(f"dashboard panel {p['title']}: no query")
        for t in p.get("targets", []):
            if not t.get("datasource"):
                bad.append(f"dashboard panel {p['title']}: target without datasource")
            exprs.append((p["title"], t["expr"]))
            for n in NAME.findall(t["expr"]):
                if not base_name(n, contract):
                    bad.append(f"dashboard panel {p['title']}: {n} is not in the contract")
    for v in dash["templating"]["list"]:
        q = v.get("definition", "")
        for n in NAME.findall(q):
            if not base_name(n, contract):
                bad.append(f"dashboard variable {v['name']}: {n} is not in the contract")
    used = {base_name(n, contract) for _, e in exprs for n in NAME.findall(e)}
    for want in ("ktls_handshakes_completed_total", "ktls_offload_ktls_total", "ktls_fallbacks_total",
                 "ktls_handoff_latency_seconds", "ktls_pending_handoffs",
                 "ktls_certificate_not_after_timestamp_seconds"):
        if want not in used:
            bad.append(f"dashboard: no panel shows {want}")
    # Grafana variables -> concrete values, so promtool can parse every query.
    rec = []
    for i, (title, e) in enumerate(exprs):
        e = e.replace("$__rate_interval", "5m").replace('"$job"', '".+"').replace('"$instance"', '".+"')
        if "$" in e:
            bad.append(f"dashboard panel {title}: unreplaced variable in {e}")
        rec.append({"record": f"dashboard:query_{i}", "expr": e})
    with open(out_rules, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rec}]}, f)
    for b in bad:
        print("  " + b)
    print(f"contract: {len(contract)} metrics; rules and {len(exprs)} dashboard queries checked")
    return 1 if bad else 0


def scrape_cmd(docs, metrics_path):
    contract = load_contract(docs)
    types = {}
    for line in open(metrics_path):
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            types[m.group(1)] = m.group(2)
    missing, wrong = [], []
    for name, typ in sorted(contract.items()):
        # prometheus-cpp declares counters without _total in # TYPE lines on some versions.
        got = types.get(name) or types.get(name[:-len("_total")] if name.endswith("_total") else name)
        if got is None:
            missing.append(name)
        elif got != typ:
            wrong.append(f"{name}: {got}, contract says {typ}")
    for w in wrong:
        print("  type mismatch:", w)
    if missing:
        print("  missing from /metrics:", ", ".join(missing))
    print(f"scrape: {len(contract) - len(missing) - len(wrong)}/{len(contract)} contract families present")
    return 1 if (missing or wrong) else 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "contract":
        sys.exit(contract_cmd(*sys.argv[2:]))
    if len(sys.argv) == 4 and sys.argv[1] == "scrape":
        sys.exit(scrape_cmd(*sys.argv[2:]))
    sys.exit(__doc__)
