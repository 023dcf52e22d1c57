#!/usr/bin/env bash
# The container image, built for real from the Dockerfile with buildah (Debian's package),
# then inspected: numeric non-root user 65532, entrypoint and command, no shell (the image
# holds exactly the one binary), its size, and `orgops --version` run from the binary
# extracted out of the image. Nothing is pulled (FROM scratch) and nothing is run in a
# container (no runtime here). As root in this sandbox buildah works with chroot isolation
# and the vfs storage driver (no overlay mounts, no user namespaces needed). It keeps its
# own storage under target/image/ and removes it afterwards.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
if ! command -v buildah >/dev/null; then
  echo "77-image: installing buildah" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah >/dev/null
fi
if ! command -v musl-gcc >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends musl-tools >/dev/null
fi
version=$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)
bin=$(hack/release-build | tail -n1)
[ "$bin" = "$root/target/release-static/orgops" ] || { echo "77-image: hack/release-build wrote $bin, the Dockerfile copies target/release-static/orgops" >&2; exit 1; }

store="$root/target/image/$$"
tag="localhost/orgops:test-$$"
b() { buildah --root "$store/storage" --runroot "$store/run" --storage-driver vfs "$@"; }
ctr=""
cleanup() {
  if [ -n "$ctr" ]; then b umount "$ctr" >/dev/null 2>&1 || true; b rm "$ctr" >/dev/null 2>&1 || true; fi
  b rmi -f "$tag" >/dev/null 2>&1 || true
  rm -rf "$store"
}
trap cleanup EXIT
fail() { echo "77-image: $*" >&2; exit 1; }

start=$SECONDS
b build --quiet --isolation chroot --pull-never -f Dockerfile -t "$tag" . >/dev/null
build_s=$((SECONDS - start))

user=$(b inspect --type image --format '{{.OCIv1.Config.User}}' "$tag")
entrypoint=$(b inspect --type image --format '{{.OCIv1.Config.Entrypoint}}' "$tag")
cmd=$(b inspect --type image --format '{{.OCIv1.Config.Cmd}}' "$tag")
[ "$user" = "65532:65532" ] || fail "image user is '$user', want 65532:65532"
[ "$entrypoint" = '[/usr/local/bin/orgops]' ] || fail "entrypoint is $entrypoint"
[ "$cmd" = '[run]' ] || fail "cmd is $cmd"

ctr=$(b from --pull-never "$tag")
mnt=$(b mount "$ctr")
files=$(cd "$mnt" && find . -mindepth 1 -not -type d | sort)
[ "$files" = "./usr/local/bin/orgops" ] || fail "the image holds more than the binary (a shell or libc would show here):
$files"
for sh in bin/sh bin/bash bin/busybox usr/bin/sh; do
  [ ! -e "$mnt/$sh" ] || fail "the image has a shell: /$sh"
done
cp "$mnt/usr/local/bin/orgops" "$store/orgops-from-image"
cmp -s "$store/orgops-from-image" "$bin" || fail "the binary in the image differs from $bin"
got=$("$store/orgops-from-image" --version)
[ "$got" = "orgops $version" ] || fail "orgops --version from the image says '$got', want 'orgops $version'"
size=$(b images --format '{{.Size}}' "$tag")
echo "77-image: PASS (buildah build in ${build_s}s; user 65532:65532, entrypoint $entrypoint $cmd, one file and no shell, size $size, '$got')"
