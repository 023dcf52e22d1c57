#!/usr/bin/env bash
# tier: fast
# Docs stay true: docs/metrics.md names exactly the metrics registered in src/,
# docs/configuration.md names every environment variable of `orgops run`, and every section of
# docs/benchmarks.md carries the date and the commit its figures were measured on.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
bad=0
# Registered names: rustfmt puts the name of each registry.register(...) call on its own line.
# prometheus-client appends _total to counters, so the docs may name either form.
registered=$(grep -rhE '^\s*"orgops_[a-z_]+",\s*$' src | tr -d '", ' | sort -u)
[ -n "$registered" ] || { echo "50-docs: found no metrics in src/" >&2; exit 1; }
for name in $registered; do
  if ! grep -Eq "\`${name}(_total)?\`" docs/metrics.md; then
    echo "50-docs: metric $name (registered in src/) is missing from docs/metrics.md" >&2
    bad=1
  fi
done
# Table rows of docs/metrics.md must name metrics that exist.
for doc in $(grep -oE '^\| `orgops_[a-z_]+`' docs/metrics.md | tr -d '|` '); do
  if ! grep -qx "${doc%_total}" <<<"$registered" && ! grep -qx "$doc" <<<"$registered"; then
    echo "50-docs: docs/metrics.md lists $doc, which src/ does not register" >&2
    bad=1
  fi
done
envs=$(grep -rhoE 'env = "ORGOPS_[A-Z_]+"' src | sed 's/env = "\(.*\)"/\1/' | sort -u)
for env in $envs; do
  if ! grep -q "\`$env\`" docs/configuration.md; then
    echo "50-docs: $env is missing from docs/configuration.md" >&2
    bad=1
  fi
done
# Benchmarks: each `## ` section of docs/benchmarks.md has a line
# "**Measured:** YYYY-MM-DD..., commit `abc1234`" (or "before `abc1234`"), and that commit is
# in this repository's history.
sections=0
while IFS=$'\t' read -r heading commit; do
  sections=$((sections + 1))
  if [ -z "$commit" ]; then
    echo "50-docs: docs/benchmarks.md section '$heading' has no '**Measured:** DATE, commit \`SHA\`' line" >&2
    bad=1
  elif ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
    echo "50-docs: docs/benchmarks.md section '$heading' names commit $commit, which is not in this repository" >&2
    bad=1
  fi
done < <(python3 - docs/benchmarks.md <<'PY'
import re, sys
heading, commit = None, None
def flush():
    if heading is not None:
        print(f"{heading}\t{commit or ''}")
for line in open(sys.argv[1]).read().split("\n"):
    if line.startswith("## "):
        flush()
        heading, commit = line[3:], None
    m = re.match(r"\*\*Measured:\*\* .*\b20\d\d-\d\d-\d\d\b.*?(?:commit|before) `([0-9a-f]{7,40})`", line)
    if heading is not None and m and commit is None:
        commit = m.group(1)
flush()
PY
)
[ "$sections" -gt 0 ] || { echo "50-docs: found no sections in docs/benchmarks.md" >&2; bad=1; }
[ "$bad" = 0 ] || exit 1
echo "50-docs: PASS ($(wc -w <<<"$registered") metrics, $(wc -w <<<"$envs") ORGOPS_* variables documented; $sections benchmark sections dated, with their commit)"
