#!/usr/bin/env bash
# End-to-end suite: the built operator against a real kube-apiserver and real LiteLLM proxies.
#
#   hack/e2e.sh                      start the test bed, run the suite on each LiteLLM version, stop everything
#   KUBECONFIG=... E2E_EXISTING_CLUSTER=1 hack/e2e.sh
#                                    use an existing cluster (kind, k3d, a real one) instead of the local
#                                    control plane; the CRD is applied to it, test namespaces are e2e-*
#
# Environment: LITELLM_VERSIONS (default "1.108.7 1.80.5": the newest installable proxy and one of the older
# generation), LITELLM_TESTBED_DIR (default ../shared/testbed/litellm beside the repository), E2E_STATE_DIR
# (default a new temporary directory), CARGO_TARGET_DIR, E2E_LITELLM_PORT (default 4400: the first proxy's port,
# the next version gets the next port), E2E_LITELLM_PG_PORT (default E2E_LITELLM_PORT + 11000, the same way),
# and KUBE_TESTBED_PORT / KUBE_TESTBED_ETCD_PORT (hack/kube-testbed.sh) to share the machine with other beds.
# E2E_THREADS (default 6) tests run at once, E2E_THREADS_OLDER (default 3) beside a proxy of the older generation.
# E2E_ONLY (test name filters, space-separated, for example "migrate_ adopted") runs only the matching tests
# of the suite on each version, and nothing else: for iterating on a few tests. E2E_OPERATOR_LOG is the
# operators' RUST_LOG (default info; "info,litellm_operator=debug" also logs each reconcile's outcome).
#
# The container image (hack/image.sh) is built and, against the first LiteLLM version, run as the chart's pod
# would run it; a real Prometheus scrapes it (hack/prometheus-check.py: the dashboard's queries and the chart's
# alerts), and the create/update/delete/rotation tests run again with every operator in the image
# (E2E_OPERATOR_IMAGE). E2E_CONTAINER=0 skips this; E2E_IMAGE_PORT and E2E_PROMETHEUS_PORT fix the ports of the
# image's metrics and of Prometheus (default: free ones). Last, the chart's pod runs on a real kubelet with
# containerd (hack/kubelet-node.sh; E2E_KUBELET=0 skips it).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
LITELLM_TESTBED_DIR="${LITELLM_TESTBED_DIR:-$ROOT/../shared/testbed/litellm}"
VERSIONS="${LITELLM_VERSIONS:-1.108.7 1.80.5}"
STATE="${E2E_STATE_DIR:-$(mktemp -d /tmp/litellm-operator-e2e.XXXXXX)}"
mkdir -p "$STATE"
log() { printf '[e2e] %s\n' "$*" >&2; }
phase_start=$SECONDS
phase() { log "$1 took $((SECONDS - phase_start)) s"; phase_start=$SECONDS; }

started_kube=""
started_proxies=()
CONTAINER="${E2E_CONTAINER:-1}"
IMAGE="localhost/litellm-operator:e2e-$(basename "$STATE")"
export IMAGE
cleanup() {
  local code=$?
  if [ "$CONTAINER" = 1 ]; then
    bash "$ROOT/hack/kubelet-node.sh" down "$STATE/node" 2>/dev/null || true
    bash "$ROOT/hack/image.sh" stop "$STATE/image" || true
    podman rmi --force "$IMAGE" >/dev/null 2>&1 || true
  fi
  for dir in "${started_proxies[@]}"; do bash "$LITELLM_TESTBED_DIR/down.sh" "$dir" >/dev/null 2>&1 || true; done
  if [ -n "$started_kube" ]; then bash "$ROOT/hack/kube-testbed.sh" down "$STATE/kube" || true; fi
  if [ "$code" -ne 0 ]; then
    log "failed; logs are in $STATE (operator logs in $STATE/operator-logs, proxies in $STATE/litellm-*/logs)"
  fi
  exit "$code"
}
trap cleanup EXIT

# 1. The operator binary and the suite, built once.
cargo build --quiet --workspace --bins
cargo test --quiet --test e2e --no-run
cargo test --quiet -p litellm-emulator --test contract --no-run
KSTATUS_BIN="${XDG_CACHE_HOME:-$HOME/.cache}/litellm-operator/kstatus"
(cd hack/kstatus && go build -o "$KSTATUS_BIN" .)
export KSTATUS_BIN
OPERATOR_BIN="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/litellm-operator"
export OPERATOR_BIN
phase "build"

# 2. The LiteLLM proxies start in the background while Kubernetes comes up.
LITELLM_PORT="${E2E_LITELLM_PORT:-4400}"
# PostgreSQL's ports stay below the kernel's ephemeral range (32768-60999 here): while the control plane starts,
# one of its outgoing connections can hold such a port as its local end, and postgres then cannot bind it.
LITELLM_PG_PORT="${E2E_LITELLM_PG_PORT:-$((LITELLM_PORT + 11000))}"
port=$LITELLM_PORT pg_port=$LITELLM_PG_PORT
declare -A proxy_env
for version in $VERSIONS; do
  dir="$STATE/litellm-$version"
  mkdir -p "$dir"
  started_proxies+=("$dir")
  bash "$LITELLM_TESTBED_DIR/up.sh" "$dir" --version "$version" --port "$port" --pg-port "$pg_port" \
    >"$dir.env" 2>"$dir.up.log" &
  proxy_env[$version]="$dir.env:$!"
  port=$((port + 1)) pg_port=$((pg_port + 1))
done

# 3. Kubernetes: the local control plane, or the cluster KUBECONFIG names.
if [ "${E2E_EXISTING_CLUSTER:-}" = 1 ]; then
  log "using the existing cluster in ${KUBECONFIG:-~/.kube/config}"
else
  started_kube=1
  eval "$(bash "$ROOT/hack/kube-testbed.sh" up "$STATE/kube")"
  export PATH="$KUBE_TESTBED_BIN_DIR:$PATH"
fi
phase "kubernetes"

# 4. The chart, checked and then installed as a user would. The Deployment cannot run here (no kubelet), so
#    every operator process of the suite runs with a token of the chart's ServiceAccount: the suite passes
#    only if the chart's RBAC is enough.
helm version --short >&2
bash hack/chart-check.sh
helm upgrade --install litellm-operator charts/litellm-operator -n litellm-system --create-namespace --wait=false \
  --set litellm.url="http://127.0.0.1:$LITELLM_PORT" --set litellm.masterKeySecret.name=litellm-master-key \
  --set leaderElection.enabled=true >&2
kubectl wait --for=condition=Established --timeout=60s crd/litellmusers.litellm-operator.io \
  crd/litellmproxies.litellm-operator.io >&2
OPERATOR_KUBECONFIG="$STATE/operator.kubeconfig"
kubectl config view --minify --raw --flatten >"$OPERATOR_KUBECONFIG"
kubectl --kubeconfig "$OPERATOR_KUBECONFIG" config set-credentials litellm-operator \
  --token="$(kubectl -n litellm-system create token litellm-operator --duration=3h)" >/dev/null
kubectl --kubeconfig "$OPERATOR_KUBECONFIG" config set-context --current --user=litellm-operator >/dev/null
export OPERATOR_KUBECONFIG E2E_LEASE_NAMESPACE=litellm-system
# The token really is limited: it may not, say, read the cluster's RBAC.
if kubectl --kubeconfig "$OPERATOR_KUBECONFIG" get clusterroles >/dev/null 2>&1; then
  log "the chart's ServiceAccount can list ClusterRoles: its RBAC is wider than the chart says"; exit 1
fi
phase "chart"

# 4b. The image, from the Dockerfile and the static binary. In container mode the operator reads the
#     kubeconfig as UID 65532, as a pod reads its Secret volumes (fsGroup).
# A free port below the kernel's ephemeral range (32768 and up here): a port the kernel hands out for port 0 can
# be handed out again as the local end of an outgoing connection before the server binds it (the kubelet lost
# its port to one of its own connections to the API server that way).
free_port() {
  python3 -c '
import random, socket
low = min(32768, int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0]))
for port in random.sample(range(20000, low), 200):
    try:
        socket.create_server(("127.0.0.1", port)).close()
    except OSError:
        continue
    print(port)
    break
else:
    raise SystemExit("no free port below the ephemeral range")'
}
if [ "$CONTAINER" = 1 ]; then
  bash hack/image.sh build >/dev/null
  E2E_OPERATOR_PODMAN_FLAGS="$(bash hack/image.sh flags)"
  chgrp 65532 "$OPERATOR_KUBECONFIG" && chmod 0640 "$OPERATOR_KUBECONFIG"
  phase "image"
fi
CONTAINER_VERSION="${VERSIONS%% *}"

# 5. The suite, once per proxy version.
failed=0
for version in $VERSIONS; do
  IFS=: read -r envfile pid <<<"${proxy_env[$version]}"
  if ! wait "$pid"; then
    log "LiteLLM $version did not start:"; tail -n 40 "${envfile%.env}.up.log" >&2; exit 1
  fi
  phase "LiteLLM $version start (overlapping the steps above)"
  # shellcheck disable=SC1090
  source "$envfile"
  E2E_PROXIES="${E2E_PROXIES:-} $LITELLM_URL=$LITELLM_MASTER_KEY"
  export E2E_LOG_DIR="$STATE/operator-logs/$version"
  log "suite against LiteLLM $LITELLM_VERSION at $LITELLM_URL"
  if [ -n "${E2E_ONLY:-}" ]; then
    # shellcheck disable=SC2086
    cargo test --quiet --test e2e -- --ignored --test-threads "${E2E_THREADS:-6}" $E2E_ONLY || failed=1
    phase "selected tests on LiteLLM $version"
    continue
  fi
  # The emulator is held to this proxy: the same requests, the same answers (crates/litellm-emulator/tests/contract.rs).
  cargo test --quiet -p litellm-emulator --test contract -- --ignored --exact real_proxy_matches_expectations || failed=1
  # The older proxy generation is the bottleneck on two cores: with a core busy elsewhere, six tests at once
  # starved it until their calls timed out (hack/e2e-repeat.sh). Half as many run beside it.
  threads="${E2E_THREADS:-6}"
  case "$version" in 1.7* | 1.80.*) threads="${E2E_THREADS_OLDER:-3}" ;; esac
  cargo test --quiet --test e2e -- --ignored --test-threads "$threads" --skip serial_ --skip emulator_ --skip proxies_ || failed=1
  # Tests that stop the shared proxy run alone.
  cargo test --quiet --test e2e -- --ignored --test-threads 1 serial_ || failed=1
  phase "suite on LiteLLM $version"
  if [ "$CONTAINER" = 1 ] && [ "$version" = "$CONTAINER_VERSION" ]; then
    # The image run as the chart's pod, scraped by a real Prometheus.
    image_port="${E2E_IMAGE_PORT:-$(free_port)}"
    image_env="$(IMAGE_PORT="$image_port" bash hack/image.sh run "$STATE/image")"
    eval "$image_env"
    mkdir -p "$STATE/prometheus"
    bash hack/prometheus-rules.sh render "$STATE/prometheus/rules.yaml"
    python3 hack/prometheus-check.py --target "127.0.0.1:$image_port" --namespace "$IMAGE_WATCH_NAMESPACE" \
      --listen "127.0.0.1:${E2E_PROMETHEUS_PORT:-$(free_port)}" --state "$STATE/prometheus" \
      --rules "$STATE/prometheus/rules.yaml" || failed=1
    bash hack/image.sh stop "$STATE/image"
    phase "image as the chart's pod, and Prometheus, on LiteLLM $version"
    # Every operator of these tests runs in the image.
    E2E_OPERATOR_IMAGE="$IMAGE" E2E_OPERATOR_PODMAN_FLAGS="$E2E_OPERATOR_PODMAN_FLAGS" \
      cargo test --quiet --test e2e -- --ignored --test-threads "${E2E_THREADS:-6}" \
      create_gives_ready_user_and_a_working_key spec_changes_reach_the_proxy delete_removes_the_user_and_its_keys \
      rotation || failed=1
    phase "suite in the container image on LiteLLM $version"
  fi
done
if [ -n "${E2E_ONLY:-}" ]; then
  [ "$failed" = 0 ] || log "the selected tests failed"
  exit "$failed"
fi
# One operator serving both proxies at once: once is enough.
E2E_PROXIES="$E2E_PROXIES" cargo test --quiet --test e2e -- --ignored --test-threads 3 proxies_ || failed=1
phase "one operator, both proxies"
# Tests that bring their own LiteLLM emulator (faults on cue) need no proxy version: once is enough.
cargo test --quiet --test e2e -- --ignored --nocapture emulator_ || failed=1
phase "fault suite on the emulator"
# The tests of trust (planted keys, races, rotation, ...) run against the emulator too, as a third proxy: the
# emulator must behave like the real ones in every way these tests touch.
emulator_port="${E2E_EMULATOR_PORT:-4499}"
LITELLM_MASTER_KEY=sk-e2e-emulator-master-key "$(dirname "$OPERATOR_BIN")/litellm-emulator" --port "$emulator_port" \
  >"$STATE/emulator.log" 2>&1 &
emulator_pid=$!
(LITELLM_URL="http://127.0.0.1:$emulator_port" LITELLM_MASTER_KEY=sk-e2e-emulator-master-key LITELLM_VERSION=emulator \
  E2E_LOG_DIR="$STATE/operator-logs/emulator" \
  cargo test --quiet --test e2e -- --ignored --test-threads "${E2E_THREADS:-6}" trust:: --skip emulator_) || failed=1
kill "$emulator_pid" 2>/dev/null || true
phase "tests of trust on the emulator"

# The chart's pod on a real kubelet (containerd, runc) registered with the local control plane.
if [ "$CONTAINER" = 1 ] && [ "${E2E_KUBELET:-1}" = 1 ] && [ "${E2E_EXISTING_CLUSTER:-}" != 1 ]; then
  if ! KUBELET_PORT="$(free_port)" KUBELET_HEALTHZ_PORT="$(free_port)" bash hack/kubelet-node.sh up "$STATE/node" ||
    ! KUBELET_METRICS_PORT="$(free_port)" bash hack/kubelet-node.sh pod "$STATE/node"; then
    failed=1
  fi
  bash hack/kubelet-node.sh down "$STATE/node"
  phase "the chart's pod on a real kubelet"
fi
[ "$failed" = 0 ] || log "the suite failed"
exit "$failed"
