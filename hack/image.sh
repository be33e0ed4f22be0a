#!/usr/bin/env bash
# The container image, built from the repository's Dockerfile and run the way the chart's Deployment runs it.
#
#   hack/image.sh build              the static musl binary (hack/static-build.sh) fed to the Dockerfile's
#                                    BINARY=prebuilt stage with buildah; checks user 65532, entrypoint, size,
#                                    no shell. Prints the image name on stdout.
#   hack/image.sh run STATE_DIR      runs the image against the test bed (KUBECONFIG, LITELLM_URL,
#                                    LITELLM_MASTER_KEY) with the pod and container settings of the chart's
#                                    rendered Deployment (hack/pod-run.py: read-only root, UID 65532, all
#                                    capabilities dropped, no privilege escalation, RuntimeDefault seccomp, the
#                                    memory limit), the chart's env and args, its master key Secret volume and a
#                                    projected service account token of the chart's ServiceAccount (in-cluster
#                                    configuration, as in a pod), on the host network; checks what the kernel
#                                    says the process runs with and probes /healthz and /readyz as the chart's
#                                    probes do. Prints `export` lines (container name, metrics URL) on stdout.
#   hack/image.sh flags              podman flags for the chart's security settings, one per line
#   hack/image.sh stop STATE_DIR     stops and removes the container
#
# Environment: IMAGE (default localhost/litellm-operator:dev), IMAGE_MAX_BYTES (default 40 MB),
# IMAGE_PORT (metrics port for `run`, default 18080), IMAGE_WATCH_NAMESPACE (default e2e-image, created),
# CONTAINERS_SETUP (script that makes podman work here; default ../shared/testbed/containers/setup.sh).
# The chart must be installed (hack/e2e.sh does it): `run` uses its ServiceAccount in litellm-system.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
IMAGE="${IMAGE:-localhost/litellm-operator:dev}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/litellm-operator"
log() { printf '[image] %s\n' "$*" >&2; }

containers_ready() {
  local setup="${CONTAINERS_SETUP:-$ROOT/../shared/testbed/containers/setup.sh}"
  if [ -f "$setup" ]; then
    bash "$setup"
  elif ! command -v podman >/dev/null || ! command -v buildah >/dev/null; then
    log "podman and buildah are needed (and $setup to configure them) "; exit 1
  fi
}

build() {
  containers_ready
  local context="$CACHE/image-context" max="${IMAGE_MAX_BYTES:-40000000}"
  rm -rf "$context"
  mkdir -p "$context"
  bash hack/static-build.sh --dist "$context/dist"
  # The repository's Dockerfile, its prebuilt stage; the source stage (a Rust image) is not built.
  local arch dir
  for dir in "$context"/dist/*/; do arch="$(basename "$dir")"; done
  buildah bud --quiet --layers=false --platform "linux/$arch" --build-arg TARGETARCH="$arch" --build-arg BINARY=prebuilt -f "$ROOT/Dockerfile" -t "$IMAGE" "$context" >/dev/null
  local user entrypoint cmd size
  user="$(podman image inspect "$IMAGE" --format '{{.Config.User}}')"
  entrypoint="$(podman image inspect "$IMAGE" --format '{{json .Config.Entrypoint}}')"
  cmd="$(podman image inspect "$IMAGE" --format '{{json .Config.Cmd}}')"
  size="$(podman image inspect "$IMAGE" --format '{{.Size}}')"
  [ "$user" = 65532:65532 ] || { log "image user is '$user', want 65532:65532"; exit 1; }
  [ "$entrypoint" = '["/litellm-operator"]' ] || { log "entrypoint is $entrypoint"; exit 1; }
  [ "$cmd" = '["run"]' ] || { log "default arguments are $cmd, want [\"run\"]"; exit 1; }
  [ "$size" -le "$max" ] || { log "image is $size bytes, more than $max"; exit 1; }
  # No shell, nothing but the binary and the CA bundle.
  if podman run --rm --network=none --entrypoint /bin/sh "$IMAGE" -c true >/dev/null 2>&1; then
    log "the image has a shell"; exit 1
  fi
  podman run --rm --network=none "$IMAGE" --version >&2
  log "$IMAGE: user $user, entrypoint $entrypoint $cmd, $size bytes, no shell"
  echo "$IMAGE"
}

# The chart's Deployment, rendered for this test bed, as JSON.
deployment() { # out_json, port, namespace
  local yaml
  yaml="$(mktemp)"
  helm template litellm-operator charts/litellm-operator -n litellm-system --show-only templates/deployment.yaml \
    --set litellm.url="${LITELLM_URL:-http://127.0.0.1:4000}" --set litellm.masterKeySecret.name=litellm-master-key \
    --set metrics.port="$2" --set "watchNamespaces={$3}" --set image.repository="${IMAGE%:*}" \
    --set image.tag="${IMAGE##*:}" >"$yaml"
  kubectl create --dry-run=client -o json -f "$yaml" >"$1"
  rm -f "$yaml"
  # The chart would run this very image.
  python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["spec"]["template"]["spec"]["containers"][0]
assert c["image"] == sys.argv[2], (c["image"], sys.argv[2])' "$1" "$IMAGE"
}

run() {
  local state="${1:?usage: run STATE_DIR}" port="${IMAGE_PORT:-18080}" ns="${IMAGE_WATCH_NAMESPACE:-e2e-image}"
  : "${LITELLM_URL:?LITELLM_URL must be set}" "${LITELLM_MASTER_KEY:?LITELLM_MASTER_KEY must be set}"
  containers_ready
  mkdir -p "$state/secret" "$state/sa"
  state="$(cd "$state" && pwd)"
  local name="litellm-operator-${state//[^a-zA-Z0-9]/-}"
  name="${name:0:60}"
  deployment "$state/deployment.json" "$port" "$ns"
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  # What the kubelet would mount: the master key Secret, and a token of the chart's ServiceAccount.
  (umask 077 && printf '%s' "$LITELLM_MASTER_KEY" >"$state/secret/masterkey")
  (umask 077 && kubectl -n litellm-system create token litellm-operator --duration=2h >"$state/sa/token")
  kubectl config view --minify --raw --flatten -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' |
    base64 -d >"$state/sa/ca.crt"
  local server
  server="$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
  python3 hack/pod-run.py run "$state/deployment.json" --name "$name" --image "$IMAGE" --state "$state/pod" \
    --api-server "$server" --serviceaccount "$state/sa" --secret "litellm-master-key=$state/secret" \
    --listen "127.0.0.1:$port"
  echo "$name" >"$state/container"
  if ! python3 hack/pod-run.py probe "$state/deployment.json" --name "$name" --deadline 90 ||
    ! python3 hack/pod-run.py check "$name" --user 65532:65532; then
    podman logs "$name" 2>&1 | tail -n 30 >&2
    stop "$state"
    exit 1
  fi
  cat <<EOF
export IMAGE_CONTAINER=$name
export IMAGE_METRICS_URL=http://127.0.0.1:$port/metrics
export IMAGE_WATCH_NAMESPACE=$ns
EOF
}

stop() {
  local state="${1:?usage: stop STATE_DIR}" name
  name="$(cat "$state/container" 2>/dev/null || true)"
  [ -n "$name" ] || return 0
  podman logs "$name" >"$state/container.log" 2>&1 || true
  podman rm --force --time 10 --ignore "$name" >/dev/null
  rm -f "$state/container"
}

flags() {
  local json
  json="$(mktemp)"
  deployment "$json" 8080 default
  python3 hack/pod-run.py flags "$json"
  rm -f "$json"
}

case "${1:-}" in
  build) build ;;
  run) run "${2:-}" ;;
  stop) stop "${2:-}" ;;
  flags) flags ;;
  *) echo "usage: $0 build|run STATE_DIR|stop STATE_DIR|flags" >&2; exit 2 ;;
esac
