#!/usr/bin/env bash
# Docs stay true: docs/metrics.md names exactly the metrics registered in src/, and
# docs/configuration.md names every environment variable of `orgops run`.
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
[ "$bad" = 0 ] || exit 1
echo "50-docs: PASS ($(wc -w <<<"$registered") metrics, $(wc -w <<<"$envs") ORGOPS_* variables documented)"
