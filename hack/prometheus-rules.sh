#!/usr/bin/env bash
# The chart's alerting rules, as the chart renders them (templates/prometheusrule.yaml with the ServiceMonitor
# on), checked with promtool and unit-tested with `promtool test rules` against tests/prometheus/*.test.yaml.
#
#   hack/prometheus-rules.sh             check and test
#   hack/prometheus-rules.sh render OUT  write the rendered rule groups (a Prometheus rules file) to OUT
#
# Needs helm (hack/kube-testbed.sh builds one) and promtool (Debian's prometheus package, installed if missing).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

if ! command -v promtool >/dev/null; then
  apt-get install -y -qq prometheus >/dev/null 2>&1 || { apt-get update -qq >&2 && apt-get install -y -qq prometheus >&2; }
fi
if ! command -v helm >/dev/null; then
  PATH="$(dirname "$(bash hack/kube-testbed.sh build)"):$PATH"
fi

render() { # out
  helm template litellm-operator charts/litellm-operator -n litellm-system --show-only templates/prometheusrule.yaml \
    --set litellm.url=http://litellm:4000 --set litellm.masterKeySecret.name=k \
    --set metrics.serviceMonitor.enabled=true --set metrics.prometheusRule.enabled=true |
    python3 -c '
import sys
lines = sys.stdin.read().splitlines()
start = lines.index("spec:") + 1
assert all(l.startswith("  ") or not l.strip() for l in lines[start:]), "spec is not the last key"
print("\n".join(l[2:] for l in lines[start:]))' >"$1"
}

if [ "${1:-}" = render ]; then render "${2:?usage: render OUT}"; exit 0; fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
render "$work/litellm-operator.rules.yaml"
promtool check rules "$work/litellm-operator.rules.yaml" >&2
cp tests/prometheus/*.test.yaml "$work/"
(cd "$work" && promtool test rules ./*.test.yaml) >&2
printf '[prometheus-rules] %s alerts checked and tested\n' "$(grep -c '^ *- alert:' "$work/litellm-operator.rules.yaml")" >&2
