#!/usr/bin/env bash
# Upgrades are boring: the previous release (hack/upgrade/previous-release, built here with
# target/ reused, so only the orgops crate compiles) converges 200 customers on Layers, Gennia
# and YouHodler; then the new CRDs, `helm upgrade` and the new binary replace it. It must make
# 0 provider writes and 0 spec changes, leave every customer Ready, and read the objects etcd
# holds as v1alpha1 back as v1beta1 (hack/upgrade/README.md). Runs on a control plane of its
# own (target/upgrade/cp, other ports): the old CRDs cannot go where the new ones were.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
prev=$(awk 'NF {print $1; exit}' hack/upgrade/previous-release)
git cat-file -e "$prev^{commit}" 2>/dev/null || { echo "70-upgrade: commit $prev (hack/upgrade/previous-release) is not in this clone" >&2; exit 1; }
up="$root/target/upgrade"
src="$up/src-$prev"
prev_bin="$up/orgops-$prev"
mkdir -p "$up"
if [ ! -f "$src/.complete" ]; then
  rm -rf "$src"
  mkdir -p "$src"
  # -m: the files get the current time, so no artifact built from other sources at the
  # same relative paths can look fresh to cargo.
  git archive "$prev" | tar -x -m -C "$src"
  touch "$src/.complete"
fi
if [ ! -x "$prev_bin" ]; then
  echo "70-upgrade: building orgops at $prev (target/ reused: only the orgops crate compiles)" >&2
  CARGO_TARGET_DIR="$root/target" cargo build -q --locked -p orgops --bin orgops --manifest-path "$src/Cargo.toml"
  cp target/debug/orgops "$prev_bin.tmp"
  mv "$prev_bin.tmp" "$prev_bin"
  # Both builds write target/debug/orgops: put the current one back.
  cargo build -q -p orgops --bin orgops
fi
version=$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)
prev_version=$(awk -F'"' '/^version = / {print $2; exit}' "$src/Cargo.toml")
[ "$prev_version" != "$version" ] || { echo "70-upgrade: the previous release has this version ($version); bump Cargo.toml first" >&2; exit 1; }
[ "$(target/debug/orgops --version)" = "orgops $version" ] || { echo "70-upgrade: target/debug/orgops is not the current build" >&2; exit 1; }
[ "$("$prev_bin" --version)" = "orgops $prev_version" ] || { echo "70-upgrade: $prev_bin is not the previous release's build" >&2; exit 1; }
# Its CRDs are its own: the previous release's `orgops crds` equals its crds/ directory.
diff -q <("$prev_bin" crds) <(cat "$src"/crds/*.yaml) >/dev/null || { echo "70-upgrade: $prev_bin does not print the previous release's CRDs (a stale build?)" >&2; exit 1; }
cargo build -q -p layers-sim -p gennia-sim -p youhodler-sim --bins
tools=$(hack/tools/build)

# The control plane of this test only.
unset ORGOPS_USE_EXISTING_CLUSTER
export ORGOPS_CP_DIR="$up/cp"
export ORGOPS_ETCD_PORT=${ORGOPS_UPGRADE_ETCD_PORT:-22379} ORGOPS_ETCD_PEER_PORT=${ORGOPS_UPGRADE_ETCD_PEER_PORT:-22380}
export ORGOPS_APISERVER_PORT=${ORGOPS_UPGRADE_APISERVER_PORT:-26443} ORGOPS_KCM_PORT=${ORGOPS_UPGRADE_KCM_PORT:-30257}
hack/control-plane/down --purge >/dev/null 2>&1 || true
trap 'hack/control-plane/down --purge >/dev/null 2>&1 || true' EXIT
hack/control-plane/up >/dev/null
export KUBECONFIG="$ORGOPS_CP_DIR/kubeconfig"
rm -rf "$up/logs"
ORGOPS_PREV_BIN="$prev_bin" ORGOPS_PREV_SRC="$src" ORGOPS_BIN="$root/target/debug/orgops" HELM="$tools/helm" \
  ETCD_URL="http://127.0.0.1:$ORGOPS_ETCD_PORT" LOG_DIR="$up/logs" \
  LAYERS_SIM_BIN="$root/target/debug/layers-sim" GENNIA_SIM_BIN="$root/target/debug/gennia-sim" \
  YOUHODLER_SIM_BIN="$root/target/debug/youhodler-sim" \
  python3 hack/upgrade/run
echo "70-upgrade: PASS"
