#!/usr/bin/env bash
# Hermetic suites: the manifest suites pass whatever is already installed. This installs
# what `hack/demo up` installs (the kustomize base, server-side, the way hack/demo does) into
# the test control plane, then runs the suites that once collided with it (10-helm: the
# dry-run hit the demo's Deployment "orgops", whose selector is immutable; 40-kustomize), then
# deletes exactly the objects it created. CRDs and namespaces stay: other suites use them.
# Those two suites run only here (they are not executable), so hack/test runs each once.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
: "${KUBECONFIG:?KUBECONFIG must point at the running control plane (hack/test exports it)}"
out=$(mktemp -d)
: >"$out/created"
cleanup() {
  local rc=$? kind ns name
  while IFS=$'\t' read -r kind ns name; do
    kubectl delete "$kind" "$name" ${ns:+-n "$ns"} --ignore-not-found --wait=false >/dev/null || rc=1
  done <"$out/created"
  rm -rf "$out"
  exit "$rc"
}
trap cleanup EXIT

kubectl kustomize deploy/ > "$out/demo.yaml"
objects() {
  kubectl get -f "$out/demo.yaml" --ignore-not-found \
    -o jsonpath='{range .items[*]}{.kind}{"\t"}{.metadata.namespace}{"\t"}{.metadata.name}{"\n"}{end}' | sort
}
objects >"$out/before"
kubectl apply --server-side --force-conflicts -k deploy/ >/dev/null
objects | grep -vE '^(CustomResourceDefinition|Namespace)'$'\t' | comm -23 - "$out/before" >"$out/created" || true
kubectl -n orgops-system get deployment orgops >/dev/null   # the object the old dry-run collided with

bash hack/test.d/10-helm.sh
bash hack/test.d/40-kustomize.sh
echo "15-after-demo-install: PASS (10-helm and 40-kustomize with the demo's install present; removed $(wc -l <"$out/created") objects it created)"
