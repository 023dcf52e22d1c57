#!/usr/bin/env bash
# Kustomize base, overlay and samples: build, strict schema validation, server-side dry-run.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

hack/tools/sync-crds --check
kubectl kustomize deploy/ > "$out/base.yaml"
kubectl kustomize deploy/overlays/servicemonitor/ > "$out/servicemonitor.yaml"
kubectl kustomize deploy/samples/ > "$out/samples.yaml"
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

hack/tools/validate "$out/base.yaml" "$out/samples.yaml"

: "${KUBECONFIG:?KUBECONFIG must point at the running control plane (hack/test exports it)}"
# Dry-run does not create namespaces or CRDs, so the objects inside them need them for real.
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/customerorgs.orgops.dev crd/orgproviders.orgops.dev >/dev/null
for ns in orgops-system customers; do
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
done
kubectl apply -k deploy/ --dry-run=server >/dev/null
kubectl apply -k deploy/samples/ --dry-run=server >/dev/null
echo "40-kustomize: PASS (kustomize build, kubeconform -strict, server-side dry-run of base and samples)"
