#!/usr/bin/env bash
# Runs the operator's main job on this machine: a local Kubernetes API server, a real LiteLLM proxy, the
# operator, and examples/minimal.yaml applied; ends by showing the user's Secret and status.
#
#   hack/quickstart.sh          start everything (state in ./.quickstart), leave it running
#   hack/quickstart.sh down     stop everything it started
#
# Afterwards: `source .quickstart/env.sh` gives you KUBECONFIG, kubectl on PATH and LITELLM_URL/MASTER_KEY.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
STATE="$ROOT/.quickstart"
LITELLM_TESTBED_DIR="${LITELLM_TESTBED_DIR:-$ROOT/../shared/testbed/litellm}"
log() { printf '[quickstart] %s\n' "$*" >&2; }

if [ "${1:-}" = down ]; then
  [ -f "$STATE/operator.pid" ] && kill "$(cat "$STATE/operator.pid")" 2>/dev/null || true
  bash "$LITELLM_TESTBED_DIR/down.sh" "$STATE/litellm" >/dev/null 2>&1 || true
  bash hack/kube-testbed.sh down "$STATE/kube"
  rm -f "$STATE/operator.pid"
  log "stopped"
  exit 0
fi

mkdir -p "$STATE"
log "building the operator"
cargo build --quiet --release --bin litellm-operator
BIN="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/litellm-operator"

log "starting LiteLLM ${LITELLM_VERSION:-1.108.7} (a few minutes the first time) and Kubernetes"
bash "$LITELLM_TESTBED_DIR/up.sh" "$STATE/litellm" --version "${LITELLM_VERSION:-1.108.7}" --port 4000 >"$STATE/litellm.env" 2>"$STATE/litellm.up.log" &
proxy=$!
bash hack/kube-testbed.sh up "$STATE/kube" >"$STATE/kube.env"
wait "$proxy" || { tail -n 40 "$STATE/litellm.up.log" >&2; exit 1; }
cat "$STATE/kube.env" "$STATE/litellm.env" > "$STATE/env.sh"
echo 'export PATH="$KUBE_TESTBED_BIN_DIR:$PATH"' >> "$STATE/env.sh"
# shellcheck disable=SC1091
source "$STATE/env.sh"

kubectl apply -f crds/litellmuser.yaml >&2
kubectl wait --for=condition=Established crd/litellmusers.litellm-operator.io >&2
if ! { [ -f "$STATE/operator.pid" ] && kill -0 "$(cat "$STATE/operator.pid")" 2>/dev/null; }; then
  "$BIN" run >"$STATE/operator.log" 2>&1 &
  echo $! >"$STATE/operator.pid"
fi
log "operator running (log: $STATE/operator.log)"

kubectl apply -f examples/minimal.yaml >&2
kubectl wait --for=condition=Ready --timeout=60s litellmuser/alice >&2
echo
kubectl get litellmusers
echo
echo "# The Secret (keys shown, values hidden):"
kubectl describe secret alice-litellm-key | sed -n '/^Data/,$p'
echo
echo "# The status:"
kubectl get litellmuser alice -o jsonpath='{.status}' | python3 -m json.tool
echo
log "done. source $STATE/env.sh to use kubectl; hack/quickstart.sh down stops everything"
