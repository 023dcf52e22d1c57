#!/usr/bin/env bash
# The image's binary: built by hack/release-build (the only place the target is set),
# whose output the Dockerfile copies; the result must be statically linked and start.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target=$(hack/release-build --print-target)
grep -q '^FROM scratch$' Dockerfile || { echo "76-static: the Dockerfile must need no base image pull (FROM scratch)" >&2; exit 1; }
grep -q '^COPY target/release-static/orgops ' Dockerfile || { echo "76-static: the Dockerfile must ship hack/release-build's target/release-static/orgops" >&2; exit 1; }
if grep -Eq 'unknown-linux|--target' Dockerfile; then
  echo "76-static: the Dockerfile sets a target itself; keep it in hack/release-build only" >&2
  exit 1
fi
grep -q '^USER 65532' Dockerfile
# Image tag in the manifests follows the crate version.
version=$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)
grep -q "newTag: \"$version\"" deploy/base/kustomization.yaml || { echo "76-static: deploy/base/kustomization.yaml image tag is not $version" >&2; exit 1; }
grep -q "^appVersion: \"$version\"" deploy/helm/orgops/Chart.yaml || { echo "76-static: chart appVersion is not $version" >&2; exit 1; }

# ring compiles C for musl (Debian: musl-tools).
if ! command -v musl-gcc >/dev/null; then
  echo "76-static: installing musl-tools" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends musl-tools >/dev/null
fi
bin=$(hack/release-build "$root/target/release-static" | tail -n1)
# A static binary has no program interpreter and no shared-library dependencies.
# (Captured first: grep -q closing the pipe early would fail the pipeline under pipefail.)
headers=$(readelf -lW "$bin")
dynamic=$(readelf -dW "$bin")
if grep -q 'Requesting program interpreter' <<<"$headers"; then
  echo "76-static: $bin is dynamically linked" >&2
  exit 1
fi
if grep -q '(NEEDED)' <<<"$dynamic"; then
  echo "76-static: $bin needs shared libraries" >&2
  exit 1
fi
"$bin" --help >/dev/null
# The image's allocator is jemalloc (docs/benchmarks.md, eighth pass); its messages are in the binary.
grep -aq '<jemalloc>' "$bin" || { echo "76-static: $bin is not built with jemalloc (hack/release-build --features jemalloc)" >&2; exit 1; }
echo "76-static: PASS ($target, static, $(du -h "$bin" | cut -f1))"
