#!/usr/bin/env bash
# Runs examples/argocd/health.lua (the Argo CD health check) on a LiteLLMUser read as JSON from stdin and
# prints the verdict: Healthy, Progressing or Degraded. Uses a real Lua interpreter, as Argo CD would.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LUA="$(command -v lua5.4 || command -v lua || true)"
if [ -z "$LUA" ]; then
  { apt-get install -y -qq lua5.4 || { apt-get update -qq && apt-get install -y -qq lua5.4; }; } >/dev/null 2>&1
  LUA="$(command -v lua5.4)"
fi
table="$(python3 -c '
import json, sys
def lua(v):
    if isinstance(v, dict):
        return "{" + ",".join("[%s]=%s" % (lua(k), lua(x)) for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "{" + ",".join(lua(x) for x in v) + "}"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "nil"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v, ensure_ascii=False)  # a JSON string literal (UTF-8 kept) is a valid Lua string
print(lua(json.load(sys.stdin)))
')"
"$LUA" -e "obj = $table; local hs = dofile('$ROOT/examples/argocd/health.lua'); print(hs.status)"
