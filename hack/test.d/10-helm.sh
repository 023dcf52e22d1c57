#!/usr/bin/env bash
# Helm chart: lint, strict schema validation of the rendered objects, server-side dry-run.
# Run once, by 15-after-demo-install.sh (with the demo's install present); not executable, so
# hack/test does not run it a second time on its own. By hand: bash hack/test.d/10-helm.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bin=$(hack/tools/build)
chart=deploy/helm/orgops
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# files/rbac.yaml is a symlink to deploy/rbac.yaml on purpose; drop Helm's note about it.
helm() { "$bin/helm" "$@" 2> >(grep -v 'found symbolic link in path' >&2); }
full=(--set provider.create=true,operator.namespaces='{customers,team-b}'
      --set networkPolicy.provider.cidrs='{203.0.113.0/24}',networkPolicy.provider.ports='{8443}')

hack/tools/sync-crds --check
helm lint --strict "$chart"
helm lint --strict "$chart" "${full[@]}" --set serviceMonitor.enabled=true

helm template orgops "$chart" -n orgops-system > "$out/default.yaml"
helm template orgops "$chart" -n orgops-system --include-crds "${full[@]}" > "$out/full.yaml"
helm template orgops "$chart" -n orgops-system --set serviceMonitor.enabled=true > "$out/sm.yaml"
# The names the e2e harness binds, and values that must reach the objects.
grep -q '^kind: ClusterRole$' "$out/default.yaml"
grep -q '^  name: orgops-leader-election$' "$out/default.yaml"
grep -q 'value: "customers,team-b"' "$out/full.yaml"
grep -q 'cidr: 203.0.113.0/24' "$out/full.yaml"
# shards: N renders N Deployments, each with its own Lease, selector and 1/N of the budget.
helm template orgops "$chart" -n orgops-system --set shards=2 > "$out/shards.yaml"
[ "$(grep -c '^kind: Deployment$' "$out/shards.yaml")" = 2 ]
[ "$(grep -c '^kind: Deployment$' "$out/default.yaml")" = 1 ]
grep -q 'value: "orgops.dev/shard notin (1)"' "$out/shards.yaml"
grep -q 'value: "orgops.dev/shard=1"' "$out/shards.yaml"
grep -q 'value: "orgops-leader-shard-1"' "$out/shards.yaml"
[ "$(grep -A1 'name: ORGOPS_RATE_SHARES' "$out/shards.yaml" | grep -c 'value: "2"')" = 2 ]
if grep -q 'ORGOPS_SHARD_SELECTOR' "$out/default.yaml"; then
  echo "10-helm: one shard renders a shard selector" >&2; exit 1
fi
grep -q '^kind: OrgProvider$' "$out/full.yaml"
grep -q '^kind: ServiceMonitor$' "$out/sm.yaml"
# The finalizer policy: rendered where the cluster serves the API, left out where it does not.
helm template orgops "$chart" -n orgops-system --set finalizerPolicy.enabled=true \
  --api-versions admissionregistration.k8s.io/v1/MutatingAdmissionPolicy > "$out/policy.yaml"
grep -q '^kind: MutatingAdmissionPolicy$' "$out/policy.yaml"
grep -q '^kind: MutatingAdmissionPolicyBinding$' "$out/policy.yaml"
if grep -q '^kind: MutatingAdmissionPolicy$' "$out/default.yaml"; then
  echo "10-helm: the finalizer policy is rendered for a cluster without its API" >&2; exit 1
fi
# Namespaced mode (operator.namespaces set): Roles per namespace, no Secrets cluster-wide.
helm template orgops "$chart" -n orgops-system --set operator.namespaces='{team-a,team-b}' > "$out/namespaced.yaml"
python3 hack/tools/rbac-check "$out/default.yaml" cluster-wide orgops-system
python3 hack/tools/rbac-check "$out/namespaced.yaml" namespaced orgops-system team-a team-b

hack/tools/validate "$out/default.yaml" "$out/full.yaml" "$out/namespaced.yaml" "$out/policy.yaml"

: "${KUBECONFIG:?KUBECONFIG must point at the running control plane (hack/test exports it)}"
# Server-side dry-run under names of its own (release, namespaces, cluster-scoped objects), so
# whatever else is installed in the cluster (the demo's kustomize install, an earlier failed
# run) cannot collide with it: an existing Deployment "orgops" has another, immutable selector.
own=orgops-helm-check
mine=(--set fullnameOverride=$own --set provider.name=$own)
helm template $own "$chart" -n $own "${mine[@]}" --set finalizerPolicy.enabled=true \
  --api-versions admissionregistration.k8s.io/v1/MutatingAdmissionPolicy > "$out/dry-default.yaml"
helm template $own "$chart" -n $own --include-crds "${full[@]}" "${mine[@]}" \
  --set operator.namespaces="{$own-a,$own-b}" > "$out/dry-namespaced.yaml"
# A dry-run creates nothing, so the CRDs (for the OrgProvider) and the namespaces must exist.
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/customerorgs.orgops.dev crd/orgproviders.orgops.dev >/dev/null
for ns in $own $own-a $own-b; do
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
done
cleanup() { kubectl delete namespace $own $own-a $own-b --timeout=60s --ignore-not-found >/dev/null 2>&1 || true; rm -rf "$out"; }
trap cleanup EXIT
kubectl apply --dry-run=server -f "$out/dry-default.yaml" >/dev/null
kubectl apply --server-side --dry-run=server --force-conflicts -f "$out/dry-namespaced.yaml" >/dev/null
echo "10-helm: PASS (helm lint, kubeconform -strict, both RBAC modes, server-side dry-run under its own names)"
