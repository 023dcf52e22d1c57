#!/usr/bin/env bash
# The release, checked by each ecosystem's own validator: hack/release builds every artifact
# into one folder, then
#   checksums          sha256sum -c SHA256SUMS
#   Helm chart         helm lint --strict (the packaged chart) and ct lint (chart-testing,
#                      with its yamllint and yamale), Artifact Hub's annotation rules (ah-lint)
#   krew manifest      validate-krew-manifest (krew's), then krew itself installs the archive
#   OLM bundle         bundle/ is what hack/tools/bundle-gen makes of crds/ and deploy/, and
#                      bundle-validate (operator-framework/api: default + operatorframework suite)
#   CRs                kubectl-validate, offline, schema and CEL rules: every sample, the chart's
#                      Artifact Hub examples and the CSV's alm-examples are accepted; each file
#                      in docs/examples/rejected/ is rejected with the message on its first line
#   SBOM               CycloneDX's schema validator (cyclonedx-python-lib), and it lists the crates
#                      (the SBOM is hack/tools/sbom's, from `cargo metadata`)
#   image              the OCI archive holds one image for the tag, user 65532, FROM scratch
#   Rust dependencies  cargo deny check licenses bans sources
# Tools are pinned and built once per machine under $ORGOPS_TOOLS_DIR (hack/tools/common.sh:
# build-validators, cargo-tools, py-validators); hack/test starts their builds early. docs/development.md says which validators are substitutes and why.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
version=$(awk -F'"' '/^version = / {print $2; exit}' Cargo.toml)
bin=$(hack/tools/build-validators)
etc="$(dirname "$bin")/etc"
tools=$(hack/tools/build)
py=$(hack/tools/py-validators)
deny=$(hack/tools/cargo-tools cargo-deny)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "80-release-checks: $*" >&2; exit 1; }
passed=()

dist="$root/target/release-check/$version"
ORGOPS_DIST_DIR="$dist" hack/release "$version" >/dev/null
(cd "$dist" && sha256sum --quiet -c SHA256SUMS) || fail "SHA256SUMS does not match the files"
for f in "orgops-$version-image.oci.tar" "orgops-$version-linux-amd64.tar.gz" kubectl-orgops-linux-amd64.tar.gz \
         orgops.yaml "orgops-$version.tgz" crds.yaml "orgops-$version.cdx.json"; do
  grep -q "  $f\$" "$dist/SHA256SUMS" || fail "SHA256SUMS does not cover $f"
done
passed+=("checksums")

# --- Helm -------------------------------------------------------------------------------
helm() { "$tools/helm" "$@" 2> >(grep -v 'found symbolic link in path' >&2); }
helm lint --strict "$dist/orgops-$version.tgz" >/dev/null
helm lint --strict "$dist/orgops-$version.tgz" --set prometheusRule.enabled=true,grafanaDashboard.enabled=true,serviceMonitor.enabled=true >/dev/null
# The schema refuses what the chart cannot render.
if helm lint --strict "$dist/orgops-$version.tgz" --set operator.logFormat=xml >/dev/null 2>&1; then
  fail "values.schema.json accepted operator.logFormat=xml"
fi
passed+=("helm lint --strict (and values.schema.json refuses a bad value)")
# ct lint: chart-testing's own checks (Chart.yaml schema with yamale, yamllint, helm lint,
# version and maintainers); it runs helm, yamllint and yamale from PATH. No git diff and no
# GitHub lookups: the chart is named, maintainers are not GitHub accounts.
PATH="$tools:$py:$PATH" "$bin/ct" lint --charts deploy/helm/orgops --validate-maintainers=false \
  --check-version-increment=false --chart-yaml-schema "$etc/chart_schema.yaml" --lint-conf "$etc/lintconf.yaml" \
  >"$work/ct.out" 2>&1 || { cat "$work/ct.out" >&2; fail "ct lint failed"; }
passed+=("ct lint")
python3 hack/tools/ah-lint "$dist/orgops-$version.tgz" >/dev/null
passed+=("ah-lint (Artifact Hub annotations)")

# --- krew -------------------------------------------------------------------------------
"$bin/validate-krew-manifest" -manifest "$dist/orgops.yaml" -skip-install >"$work/krew.out" 2>&1 || { cat "$work/krew.out" >&2; fail "validate-krew-manifest failed"; }
mkdir -p "$work/krew-bin" "$work/krew-root"
ln -s "$bin/krew" "$work/krew-bin/kubectl-krew"
KREW_ROOT="$work/krew-root" PATH="$work/krew-bin:$PATH" kubectl krew install \
  --manifest="$dist/orgops.yaml" --archive="$dist/kubectl-orgops-linux-amd64.tar.gz" >"$work/krew-install.out" 2>&1 \
  || { cat "$work/krew-install.out" >&2; fail "krew install of the release archive failed"; }
installed="$work/krew-root/bin/kubectl-orgops"
[ "$("$installed" --version)" = "kubectl-orgops $version" ] || fail "the plugin krew installed does not report $version"
find "$work/krew-root/store" -name LICENSE | grep -q . || fail "krew installed no LICENSE"
# Built in one cargo run with the operator (hack/release-build), the plugin still links no jemalloc.
if grep -aq '<jemalloc>' "$installed"; then fail "the plugin links jemalloc (the operator's image feature)"; fi
passed+=("validate-krew-manifest + krew install")

# --- OLM bundle -------------------------------------------------------------------------
hack/tools/bundle-gen --check
"$bin/bundle-validate" -k8s-version 1.36 bundle >/dev/null 2>"$work/bundle.err" || { cat "$work/bundle.err" >&2; fail "bundle-validate failed"; }
passed+=("bundle-validate (operator-framework/api, suite operatorframework)")

# --- kubectl-validate: samples accepted, documented mistakes rejected with their message --
mkdir -p "$work/ok"
find deploy/samples -name '*.yaml' ! -name kustomization.yaml -exec cp --parents {} "$work/ok/" \;
python3 - deploy/helm/orgops/Chart.yaml bundle/manifests/orgops.clusterserviceversion.yaml "$work/ok" <<'PY'
import json, sys, yaml
chart, csv, out = sys.argv[1:4]
examples = yaml.safe_load(yaml.safe_load(open(chart))["annotations"]["artifacthub.io/crdsExamples"])
alm = json.loads([d for d in yaml.safe_load_all(open(csv)) if d][0]["metadata"]["annotations"]["alm-examples"])
for i, doc in enumerate(examples):
    yaml.safe_dump(doc, open(f"{out}/artifacthub-example-{i}.yaml", "w"))
for i, doc in enumerate(alm):
    yaml.safe_dump(doc, open(f"{out}/alm-example-{i}.yaml", "w"))
PY
validate() { KUBECONFIG=/dev/null "$bin/kubectl-validate" --local-crds crds --version 1.30 -o json "$@"; }
validate "$work/ok" >"$work/ok.json" 2>"$work/ok.err" || true
python3 - "$work/ok.json" <<'PY' || { cat "$work/ok.err" >&2; fail "kubectl-validate rejected a sample (above)"; }
import json, sys
res = json.load(open(sys.argv[1]))
bad = {p: [s.get("message") for s in st if s.get("status") != "Success"] for p, st in res.items()}
bad = {p: m for p, m in bad.items() if m}
for p, m in bad.items():
    print(f"{p}: {m}", file=sys.stderr)
assert res and not bad, "samples rejected"
PY
n_ok=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/ok.json")
n_bad=0
for f in docs/examples/rejected/*.yaml; do
  want=$(sed -n '1s/^# rejected: //p' "$f")
  [ -n "$want" ] || fail "$f: the first line must be '# rejected: <message>'"
  validate "$f" >"$work/bad.json" 2>/dev/null && fail "$f: kubectl-validate accepted it; docs say it is rejected with: $want"
  python3 - "$work/bad.json" "$want" "$f" <<'PY'
import json, sys
res, want, path = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
text = json.dumps(res)
msgs = [s.get("message", "") + " " + json.dumps(s.get("details", {})) for st in res.values() for s in st if s.get("status") != "Success"]
if not any(want in m for m in msgs):
    sys.exit(f"80-release-checks: {path}: rejected, but not with {want!r}: {msgs}")
PY
  n_bad=$((n_bad + 1))
done
grep -c '^| `[a-z-]*\.yaml`' docs/examples/rejected/README.md | grep -qx "$n_bad" || fail "docs/examples/rejected/README.md does not list every file ($n_bad)"
passed+=("kubectl-validate ($n_ok accepted, $n_bad rejected with their documented message)")

# --- SBOM ---------------------------------------------------------------------------------
"$py/python" - "$dist/orgops-$version.cdx.json" <<'PY'
import json, sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
doc = json.load(open(sys.argv[1]))
version = getattr(SchemaVersion, "V" + doc["specVersion"].replace(".", "_"))
err = JsonStrictValidator(version).validate_str(open(sys.argv[1]).read())
if err is not None:
    sys.exit(f"80-release-checks: the SBOM is not valid CycloneDX {doc['specVersion']}: {err}")
names = {c["name"] for c in doc.get("components", [])}
missing = {"kube", "tokio", "rustls", "k8s-openapi", "tikv-jemallocator", "clap"} - names
if missing:
    sys.exit(f"80-release-checks: the SBOM lacks {sorted(missing)}")
PY
passed+=("CycloneDX schema validation of the SBOM")

# --- image --------------------------------------------------------------------------------
python3 - "$dist/orgops-$version-image.oci.tar" "$version" <<'PY'
import json, sys, tarfile
path, version = sys.argv[1:3]
with tarfile.open(path) as t:
    index = json.load(t.extractfile("index.json"))
    [m] = index["manifests"]
    assert m["annotations"]["org.opencontainers.image.ref.name"].endswith(version), m["annotations"]
    blob = lambda d: json.load(t.extractfile("blobs/" + d.replace(":", "/")))
    manifest = blob(m["digest"])
    config = blob(manifest["config"]["digest"])
    assert config["config"]["User"] == "65532:65532", config["config"].get("User")
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/orgops"], config["config"]["Entrypoint"]
    assert len(manifest["layers"]) == 1, "FROM scratch with one COPY is one layer"
PY
passed+=("OCI image archive")

# --- cargo deny ---------------------------------------------------------------------------
"$deny/cargo-deny" --log-level error check licenses bans sources >/dev/null 2>"$work/deny.err" || { cat "$work/deny.err" >&2; fail "cargo deny failed"; }
passed+=("cargo deny (licenses, bans, sources)")

printf '80-release-checks: PASS (%s)\n' "$(IFS=';'; echo "${passed[*]}")" | sed 's/;/; /g'
