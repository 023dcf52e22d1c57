#!/usr/bin/env bash
# Flux health: the real kstatus library computes the status of every fixture, and of a
# brand-new CustomerOrg and ParentWebhook as the real apiserver stores them (the CRDs' status
# default must make them InProgress, not Current).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bin=$(hack/tools/build)
n=0
while IFS=$'\t' read -r name _argo want; do
  case "$name" in ''|'#'*) continue ;; esac
  got=$("$bin/kstatus-check" "hack/health/fixtures/$name.json" | cut -f1)
  if [ "$got" != "$want" ]; then
    echo "30-kstatus: $name: want $want, got $got" >&2
    exit 1
  fi
  n=$((n + 1))
done < hack/health/expected.tsv
[ "$n" -gt 0 ] || { echo "30-kstatus: no fixtures checked" >&2; exit 1; }

: "${KUBECONFIG:?KUBECONFIG must point at the running control plane (hack/test exports it)}"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/customerorgs.orgops.dev >/dev/null
ns=orgops-kstatus-check
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
name="fresh-$$-$RANDOM"
cleanup() {
  kubectl -n "$ns" delete customerorg "$name" --wait=false --ignore-not-found >/dev/null 2>&1 || true
  kubectl -n "$ns" delete parentwebhook "$name" --wait=false --ignore-not-found >/dev/null 2>&1 || true
}
trap cleanup EXIT
# No provider exists by this name, so an operator that happens to run never makes it Ready.
kubectl -n "$ns" create -f - >/dev/null <<YAML
apiVersion: orgops.dev/v1beta1
kind: CustomerOrg
metadata: {name: $name}
spec:
  providerRef: {name: kstatus-check-no-such-provider}
  displayName: kstatus check
YAML
if ! kubectl -n "$ns" get customerorg "$name" -o json | "$bin/kstatus-check" -expect InProgress - >/dev/null; then
  echo "30-kstatus: a brand-new CustomerOrg reads as Current; the CRD needs a status default {observedGeneration: -1}" >&2
  exit 1
fi
kubectl wait --for=condition=Established --timeout=60s crd/parentwebhooks.orgops.dev >/dev/null
kubectl -n "$ns" create -f - >/dev/null <<YAML
apiVersion: orgops.dev/v1beta1
kind: ParentWebhook
metadata: {name: $name}
spec:
  providerRef: {name: kstatus-check-no-such-provider}
  url: https://hooks.example.com/kstatus
  events: [test.ping]
YAML
if ! kubectl -n "$ns" get parentwebhook "$name" -o json | "$bin/kstatus-check" -expect InProgress - >/dev/null; then
  echo "30-kstatus: a brand-new ParentWebhook reads as Current; the CRD needs a status default {observedGeneration: -1}" >&2
  exit 1
fi
echo "30-kstatus: PASS ($n fixtures; fresh objects from the apiserver are InProgress)"
