#!/usr/bin/env bash
# Checks the Helm chart: helm lint, helm template with the default and the full set of values, and every
# rendered manifest validated by the real API server (kubectl apply --dry-run=server) against the Kubernetes
# schemas, and the ServiceMonitor and PrometheusRule against the Prometheus Operator's real CRDs; the chart's
# alerts unit-tested (hack/prometheus-rules.sh); and the Argo CD and Flux examples applied on their real CRDs
# (hack/third-party-crds.sh). Needs helm and kubectl on PATH and KUBECONFIG pointing at a cluster (hack/e2e.sh
# provides both).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
CHART=charts/litellm-operator
required=(--set litellm.url=http://litellm.litellm.svc:4000 --set litellm.masterKeySecret.name=litellm-master-key)
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

helm lint --strict "$CHART" "${required[@]}" >&2
helm lint --strict "$CHART" -f "$CHART/ci/full-values.yaml" >&2
# A release name and namespace of the check's own, so an installed release does not merge into the validation.
helm template chart-check "$CHART" -n chart-check "${required[@]}" >"$out/default.yaml"
helm template chart-check "$CHART" -n chart-check -f "$CHART/ci/full-values.yaml" >"$out/full.yaml"

# Mistakes the schema and the templates must refuse.
refuse() { # description, helm args...
  local what="$1"; shift
  if helm template x "$CHART" "$@" >/dev/null 2>"$out/err"; then echo "chart accepted $what" >&2; exit 1; fi
  printf '[chart] refuses %s: %s\n' "$what" "$(grep -m1 -v '^$' "$out/err")" >&2
}
refuse "an unknown value" "${required[@]}" --set replicas=2
refuse "a mistyped value" "${required[@]}" --set replicaCount=two
refuse "a missing proxy URL" --set litellm.masterKeySecret.name=x
refuse "a missing master key Secret" --set litellm.url=http://x:4000
refuse "two replicas without leader election" "${required[@]}" --set replicaCount=2 --set leaderElection.enabled=false

refuse "a mistyped PrometheusRule option" "${required[@]}" --set metrics.prometheusRule.enable=true

# The full values render every optional object.
for kind in ServiceMonitor PrometheusRule NetworkPolicy PodDisruptionBudget ConfigMap CustomResourceDefinition; do
  grep -q "^kind: $kind$" "$out/full.yaml" || { echo "full values render no $kind" >&2; exit 1; }
done

# The API server validates every object, the monitoring ones against the Prometheus Operator's own CRDs.
bash hack/third-party-crds.sh install
kubectl create namespace chart-check --dry-run=client -o yaml | kubectl apply -f - >/dev/null
for file in default full; do
  # Objects in namespaces that do not exist here (team-a, team-b, ...) are validated in the release namespace.
  sed -E 's/^(  )?namespace: [a-z0-9-]+$/\1namespace: chart-check/' "$out/$file.yaml" >"$out/$file.k8s.yaml"
  kubectl apply --dry-run=server -f "$out/$file.k8s.yaml" >&2
  printf '[chart] %s values: %s objects valid\n' "$file" "$(grep -c '^kind:' "$out/$file.k8s.yaml")" >&2
done
# ... really against those CRDs: a broken PrometheusRule and ServiceMonitor are refused.
for broken in 's/^( +)for: 15m$/\1for: soon/' 's/^( +)interval: 15s$/\1interval: every-now-and-then/'; do
  if sed -E "$broken" "$out/full.k8s.yaml" | kubectl apply --dry-run=server -f - >/dev/null 2>"$out/err"; then
    echo "the API server accepted a monitoring object broken with $broken" >&2; exit 1
  fi
  printf '[chart] refuses a monitoring object broken with %s: %s\n' "$broken" "$(grep -m1 -o 'is invalid: .*' "$out/err" | cut -c1-140)" >&2
done
bash hack/prometheus-rules.sh
bash hack/third-party-crds.sh examples

# No secret material is ever rendered: the master key is only referenced.
if grep -qiE 'sk-[A-Za-z0-9]' "$out/default.yaml" "$out/full.yaml"; then echo "a key was rendered" >&2; exit 1; fi
