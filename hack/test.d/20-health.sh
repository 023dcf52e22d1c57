#!/usr/bin/env bash
# tier: fast
# Argo CD Lua health check, run by a real Lua 5.4 interpreter against the fixtures.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
if ! command -v lua5.4 >/dev/null; then
  echo "20-health: installing lua5.4" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lua5.4 >/dev/null
fi
lua5.4 "$root/hack/health/test.lua"
# The argocd-cm patch from docs/gitops.md carries the tested script unchanged, for every kind.
"$root/hack/health/argocd-cm-patch" | python3 -c '
import json, sys
data = json.load(sys.stdin)["data"]
lua = open(sys.argv[1]).read()
for kind in ("CustomerOrg", "OrgProvider", "ParentWebhook"):
    assert data["resource.customizations.health.orgops.dev_" + kind] == lua, kind
' "$root/hack/health/health.lua"
echo "20-health: PASS (Argo CD health.lua)"
