#!/usr/bin/env bash
# Runs the operator's main job on this machine: a local Kubernetes API server, a LiteLLM proxy (the emulator
# from crates/litellm-emulator by default, the real proxy with --real), the operator, and examples/minimal.yaml
# applied; ends by showing the user's Secret and status.
#
#   hack/quickstart.sh          start everything (state in ./.quickstart), leave it running
#   hack/quickstart.sh --real   the same with a real LiteLLM proxy and PostgreSQL (LITELLM_VERSION, default 1.108.7)
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
  for pidfile in "$STATE/operator.pid" "$STATE/emulator.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
  bash "$LITELLM_TESTBED_DIR/down.sh" "$STATE/litellm" >/dev/null 2>&1 || true
  bash hack/kube-testbed.sh down "$STATE/kube"
  log "stopped"
  exit 0
fi

mkdir -p "$STATE"
log "building the operator"
cargo build --quiet --release --bin litellm-operator
RELEASE="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release"
BIN="$RELEASE/litellm-operator"

if [ "${1:-}" = --real ]; then
  log "starting LiteLLM ${LITELLM_VERSION:-1.108.7} with PostgreSQL (a few minutes the first time) and Kubernetes"
  bash "$LITELLM_TESTBED_DIR/up.sh" "$STATE/litellm" --version "${LITELLM_VERSION:-1.108.7}" --port 4000 \
    --pg-port 15432 >"$STATE/litellm.env" 2>"$STATE/litellm.up.log" &
  proxy=$!
else
  log "building the LiteLLM emulator (crates/litellm-emulator)"
  cargo build --quiet --release -p litellm-emulator --bin litellm-emulator
  log "starting the LiteLLM emulator and Kubernetes"
  if ! { [ -f "$STATE/emulator.pid" ] && kill -0 "$(cat "$STATE/emulator.pid")" 2>/dev/null; }; then
    LITELLM_MASTER_KEY=sk-quickstart-master-key "$RELEASE/litellm-emulator" --port 4000 >"$STATE/emulator.log" 2>&1 &
    echo $! >"$STATE/emulator.pid"
  fi
  printf 'export LITELLM_URL=http://127.0.0.1:4000\nexport LITELLM_MASTER_KEY=sk-quickstart-master-key\n' >"$STATE/litellm.env"
  proxy=""
fi
bash hack/kube-testbed.sh up "$STATE/kube" >"$STATE/kube.env"
if [ -n "$proxy" ]; then wait "$proxy" || { tail -n 40 "$STATE/litellm.up.log" >&2; exit 1; }; fi
cat "$STATE/kube.env" "$STATE/litellm.env" > "$STATE/env.sh"
echo 'export PATH="$KUBE_TESTBED_BIN_DIR:$PATH"' >> "$STATE/env.sh"
# shellcheck disable=SC1091
source "$STATE/env.sh"

kubectl apply -f crds/ >&2
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
