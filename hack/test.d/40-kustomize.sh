#!/usr/bin/env bash
# Kustomize base (cluster-wide), namespaced overlay, add-on and samples: build, strict schema validation, server-side dry-run.
# Run once, by 15-after-demo-install.sh (with the demo's install present); not executable, so
# hack/test does not run it a second time on its own. By hand: bash hack/test.d/40-kustomize.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

hack/tools/sync-crds --check
kubectl kustomize deploy/ > "$out/base.yaml"
kubectl kustomize deploy/overlays/servicemonitor/ > "$out/servicemonitor.yaml"
kubectl kustomize deploy/overlays/namespaced/ > "$out/namespaced.yaml"
python3 hack/tools/rbac-check "$out/base.yaml" cluster-wide orgops-system
python3 hack/tools/rbac-check "$out/namespaced.yaml" namespaced orgops-system customers
# Both modes share the leader-election Role; its rules are written twice, so they must agree.
python3 - deploy/rbac.yaml deploy/overlays/namespaced/rbac.yaml <<'PY'
import sys, yaml
rules = [[d["rules"] for d in yaml.safe_load_all(open(p)) if d and d["kind"] == "Role" and d["metadata"]["name"] == "orgops-leader-election"] for p in sys.argv[1:]]
assert len(rules[0]) == len(rules[1]) == 1 and rules[0] == rules[1], f"40-kustomize: leader-election Role differs between {sys.argv[1]} and {sys.argv[2]}"
PY
kubectl kustomize deploy/samples/ > "$out/samples.yaml"
for provider in gennia youhodler; do
  { echo ---; kubectl kustomize "deploy/samples/$provider/"; } >> "$out/samples.yaml"
done
grep -q '^kind: ServiceMonitor$' "$out/servicemonitor.yaml"
# The add-on composes with the base the way docs/install.md tells users to.
user="$root/target/kustomize-user"   # kustomize wants relative paths, so it lives in the tree
mkdir -p "$user"
printf 'resources:\n  - ../../deploy\n  - ../../deploy/overlays/servicemonitor\n' > "$user/kustomization.yaml"
kubectl kustomize "$user" > "$out/user.yaml"
grep -q '^kind: ServiceMonitor$' "$out/user.yaml"
grep -q '^kind: Deployment$' "$out/user.yaml"
# The e2e harness binds these names.
grep -q '^  name: orgops-leader-election$' "$out/base.yaml"
grep -q 'image: ghcr.io/orgops/orgops:' "$out/base.yaml"
# No Secret with a key in the samples: the demo and docs create it from the parent key.
if grep -q '^kind: Secret$' "$out/samples.yaml"; then
  echo "40-kustomize: deploy/samples must not contain a Secret" >&2
  exit 1
fi

hack/tools/validate "$out/base.yaml" "$out/namespaced.yaml" "$out/samples.yaml"

: "${KUBECONFIG:?KUBECONFIG must point at the running control plane (hack/test exports it)}"
# Dry-run does not create namespaces or CRDs, so the objects inside them need them for real.
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/customerorgs.orgops.dev crd/orgproviders.orgops.dev >/dev/null
for ns in orgops-system customers; do
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
done
kubectl apply -k deploy/ --dry-run=server >/dev/null
kubectl apply -k deploy/overlays/namespaced/ --dry-run=server >/dev/null
kubectl apply -k deploy/samples/ --dry-run=server >/dev/null
kubectl apply -k deploy/samples/gennia/ --dry-run=server >/dev/null
kubectl apply -k deploy/samples/youhodler/ --dry-run=server >/dev/null
echo "40-kustomize: PASS (kustomize build, kubeconform -strict, both RBAC modes, server-side dry-run of base, namespaced overlay and samples)"
