#!/usr/bin/env bash
# Alerts and dashboard: promtool checks the rules and runs their unit tests (every alert has a
# firing case), every alert links a runbook section that exists in docs/troubleshooting.md,
# every metric the rules and panels use is one orgops registers (docs/metrics.md), the
# dashboard passes dashboard-lint, and the kustomize add-on and the chart render the same rules.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bin=$(hack/tools/build-validators)
tools=$(hack/tools/build)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mon=deploy/monitoring

python3 - "$mon/prometheusrule.yaml" "$work/rules.yaml" <<'PY'
import sys, yaml
rule = yaml.safe_load(open(sys.argv[1]))
assert rule["kind"] == "PrometheusRule", "deploy/monitoring/prometheusrule.yaml is not a PrometheusRule"
yaml.safe_dump({"groups": rule["spec"]["groups"]}, open(sys.argv[2], "w"), sort_keys=False)
PY
cp "$mon/tests/alerts.test.yaml" "$work/"
"$bin/promtool" check rules "$work/rules.yaml" >/dev/null
(cd "$work" && "$bin/promtool" test rules alerts.test.yaml) >"$work/promtool.out" 2>&1 || { cat "$work/promtool.out" >&2; exit 1; }

python3 - "$work/rules.yaml" "$work/alerts.test.yaml" docs/troubleshooting.md docs/metrics.md "$mon/dashboard.json" <<'PY'
import json, re, sys, yaml
rules, tests, trouble, metrics_doc, dashboard = sys.argv[1:6]
alerts = [r for g in yaml.safe_load(open(rules))["groups"] for r in g["rules"] if "alert" in r]
fired = {a["alertname"] for t in yaml.safe_load(open(tests))["tests"] for a in t.get("alert_rule_test", []) if a.get("exp_alerts")}
anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", open(trouble).read(), re.M)}
documented = set(re.findall(r"^\| `(orgops_[a-z_]+)`", open(metrics_doc).read(), re.M))
bad = []
for a in alerts:
    name = a["alert"]
    if name not in fired:
        bad.append(f"{name}: no promtool test makes it fire")
    url = a.get("annotations", {}).get("runbook_url", "")
    anchor = url.partition("docs/troubleshooting.md#")[2]
    if not anchor or anchor not in anchors:
        bad.append(f"{name}: runbook_url {url!r} has no section in docs/troubleshooting.md")
    for key in ("summary", "description"):
        if not a.get("annotations", {}).get(key):
            bad.append(f"{name}: no {key}")
    if a.get("labels", {}).get("severity") not in ("warning", "critical"):
        bad.append(f"{name}: severity must be warning or critical")
exprs = [a["expr"] for a in alerts]
exprs += [t["expr"] for p in json.load(open(dashboard))["panels"] for t in p.get("targets", [])]
def base(m):
    for suffix in ("_bucket", "_count", "_sum"):
        if m.endswith(suffix) and m[: -len(suffix)] in documented:
            return m[: -len(suffix)]
    return m
for e in exprs:
    for m in set(re.findall(r"\b(orgops_[a-z_]+)", e)):
        if base(m) not in documented:
            bad.append(f"{m} (in {e.split()[0]}...) is not a metric docs/metrics.md lists")
if bad:
    sys.exit("75-monitoring: " + "\n75-monitoring: ".join(bad))
pass
PY

"$bin/dashboard-lint" "$mon/dashboard.json" >/dev/null

# The add-on and the chart carry the same rules and dashboard.
kubectl kustomize "$mon" > "$work/kustomize.yaml"
"$tools/helm" template orgops deploy/helm/orgops -n orgops-system \
  --set prometheusRule.enabled=true --set grafanaDashboard.enabled=true \
  2> >(grep -v 'found symbolic link in path' >&2) > "$work/helm.yaml"
python3 - "$work/kustomize.yaml" "$work/helm.yaml" "$mon/dashboard.json" <<'PY'
import json, sys, yaml
k = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
h = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[2])) if d and d["kind"] in ("PrometheusRule", "ConfigMap")}
assert k["PrometheusRule"]["spec"] == h["PrometheusRule"]["spec"], "the chart's PrometheusRule differs from deploy/monitoring's"
want = json.load(open(sys.argv[3]))
for src, d in (("kustomize", k["ConfigMap"]), ("chart", h["ConfigMap"])):
    assert json.loads(d["data"]["orgops.json"]) == want, f"the {src} dashboard ConfigMap differs from dashboard.json"
    assert d["metadata"]["labels"].get("grafana_dashboard") == "1", f"the {src} dashboard ConfigMap lacks grafana_dashboard: 1"
PY
hack/tools/validate -skip PrometheusRule "$work/kustomize.yaml" "$work/helm.yaml" >"$work/validate.out" || { cat "$work/validate.out" >&2; exit 1; }
tests=$(grep -c '^  - name:' "$mon/tests/alerts.test.yaml")
echo "75-monitoring: PASS (promtool check + test rules: $tests tests over $(grep -c '^        - alert:' "$mon/prometheusrule.yaml") alerts; runbooks present; dashboard-lint; kustomize and chart render the same rules and dashboard)"
