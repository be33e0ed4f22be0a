#!/usr/bin/env bash
# The real CRDs of the tools the project ships objects for, so those objects are validated by the API server
# against the tools' own schemas rather than accepted on trust: Argo CD's Application, Flux's Kustomization
# and GitRepository, and the Prometheus Operator's ServiceMonitor and PrometheusRule. Each comes from the Go
# module of its project at a pinned version (`go mod download`; the module cache is outside the clone).
#
#   hack/third-party-crds.sh install     apply the CRDs to the cluster KUBECONFIG names, wait until Established
#   hack/third-party-crds.sh examples    apply examples/argocd and examples/flux for real, and check that the
#                                        schemas refuse broken variants (so the check can fail)
#   hack/third-party-crds.sh files       print the CRD files' paths
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
log() { printf '[third-party-crds] %s\n' "$*" >&2; }

# module@version  path-in-module...
CRDS=(
  "github.com/argoproj/argo-cd/v3@v3.5.7 manifests/crds/application-crd.yaml"
  "github.com/fluxcd/kustomize-controller@v1.9.6 config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml"
  "github.com/fluxcd/source-controller@v1.9.6 config/crd/bases/source.toolkit.fluxcd.io_gitrepositories.yaml"
  "github.com/prometheus-operator/prometheus-operator@v0.85.0 example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml"
)

files() {
  local entry module dir file work file_list
  work="$(mktemp -d)"
  for entry in "${CRDS[@]}"; do
    read -r module file_list <<<"$entry"
    # Outside any Go module, so the download does not touch a go.mod.
    dir="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$module" |
      python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error", "no Dir")))')"
    for file in $file_list; do
      [ -f "$dir/$file" ] || { log "$module has no $file"; exit 1; }
      echo "$dir/$file"
    done
  done
  rm -rf "$work"
}

install() {
  local file names=()
  while read -r file; do
    # Server-side: Argo CD's CRD is too large for the last-applied annotation of a client-side apply.
    kubectl apply --server-side --force-conflicts --field-manager=litellm-operator-tests -f "$file" >/dev/null
    names+=("crd/$(python3 -c 'import re,sys; print(re.search(r"(?m)^  name: (\S+)", open(sys.argv[1]).read()).group(1))' "$file")")
  done < <(files)
  kubectl wait --for=condition=Established --timeout=60s "${names[@]}" >&2
  log "installed: ${names[*]#crd/}"
}

# A broken variant of an example (under another name, so it is validated as a new object) must be refused,
# while the same object unbroken is accepted: the refusal is the schema's.
refuse() { # what, example file, sed expression that breaks it
  local out renamed='0,/^  name: /s/^  name: \(.*\)/  name: \1-variant/'
  if ! out="$(sed "$renamed" "$2" | kubectl create --dry-run=server -f - 2>&1)"; then
    log "the API server refuses $2 itself: $out"; exit 1
  fi
  if out="$(sed -e "$renamed" -e "$3" "$2" | kubectl create --dry-run=server -f - 2>&1)"; then
    log "the API server accepted $1: $out"; exit 1
  fi
  log "refuses $1: $(tr '\n' ' ' <<<"$out" | cut -c1-200)"
}

examples() {
  local ns
  for ns in argocd flux-system; do
    kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  done
  kubectl apply --server-side --field-manager=litellm-operator-tests -f examples/argocd/application.yaml \
    -f examples/argocd/argocd-cm.yaml -f examples/flux/ >&2
  kubectl get -n argocd application.argoproj.io/litellm-users >/dev/null
  kubectl get -n flux-system kustomization.kustomize.toolkit.fluxcd.io/litellm-users \
    gitrepository.source.toolkit.fluxcd.io/platform >/dev/null
  # The schemas are really applied: broken variants of the same objects are refused.
  refuse "an Application without a destination" examples/argocd/application.yaml '/^  destination:/,/^    namespace:/d'
  refuse "a Kustomization whose interval is not a duration" examples/flux/kustomization.yaml 's/^  interval: .*/  interval: often/'
  refuse "a Kustomization whose source kind Flux does not know" examples/flux/kustomization.yaml 's/^    kind: GitRepository/    kind: SvnRepository/'
  refuse "a GitRepository without a URL" examples/flux/gitrepository.yaml '/^  url:/d'
  log "examples/argocd and examples/flux applied and valid"
}

case "${1:-}" in
  install) install ;;
  examples) examples ;;
  files) files ;;
  *) echo "usage: $0 install|examples|files" >&2; exit 2 ;;
esac
