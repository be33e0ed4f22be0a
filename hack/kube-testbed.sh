#!/usr/bin/env bash
# A real Kubernetes control plane for tests: etcd + kube-apiserver + kube-controller-manager,
# built from the k8s.io/kubernetes Go module (no Docker needed), plus kubectl from the same build and helm.
#
#   hack/kube-testbed.sh build            build (cached) and print the binary's path
#   hack/kube-testbed.sh up STATE_DIR     start, wait for /readyz, print `export KUBECONFIG=...` lines
#   hack/kube-testbed.sh down STATE_DIR   stop it (and its controller manager)
#   hack/kube-testbed.sh logs STATE_DIR   print its logs
#
# Environment: K8S_VERSION (default 1.35.4, matching k8s-openapi's v1_35 feature),
# KUBE_TESTBED_CACHE (default ~/.cache/litellm-operator/kube-testcp), KUBE_TESTBED_PORT (16443),
# KUBE_TESTBED_ETCD_PORT (12379). Progress goes to stderr; stdout carries only what is documented.
set -euo pipefail

K8S="${K8S_VERSION:-1.35.4}"
HERE="$(cd "$(dirname "$0")" && pwd)"
CACHE="${KUBE_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/litellm-operator/kube-testcp}"
log() { printf '[kube-testbed] %s\n' "$*" >&2; }

HELM_VERSION="${HELM_VERSION:-3.22.0}"

# helm, built from its Go module and linked into the control plane's bin directory.
helm_build() {
  local bin_dir="$1" helm="$CACHE/helm-v$HELM_VERSION/helm"
  if [ ! -x "$helm" ]; then
    log "building helm v$HELM_VERSION"
    GOBIN="$(dirname "$helm")" CGO_ENABLED=0 go install -trimpath "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION" >&2
  fi
  ln -sf "$helm" "$bin_dir/helm"
}

build() {
  local stamp bin_dir bin
  # Content only (not paths), so every clone shares one cached build.
  stamp="$(cat "$HERE/kube-testcp/main.go" "$0" | sha256sum | cut -c1-16)"
  bin_dir="$CACHE/v$K8S-$stamp"
  bin="$bin_dir/kube-testcp"
  if [ -x "$bin" ]; then helm_build "$bin_dir"; echo "$bin"; return; fi
  command -v go >/dev/null || { log "go is required to build the control plane"; exit 1; }
  log "building kube-apiserver, kube-controller-manager and kubectl v$K8S (cold: about 10 minutes)"
  local work started=$SECONDS
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  cp "$HERE/kube-testcp/main.go" "$work/"
  (
    cd "$work"
    go mod init example.invalid/kube-testcp >/dev/null 2>&1
    # k8s.io/kubernetes requires each staging module at v0.0.0 and replaces it with
    # ./staging/src/k8s.io/X; map each one to its published tag v0.<minor>.<patch>.
    local gomod etcd minor
    gomod="$(go mod download -json "k8s.io/kubernetes@v$K8S" | sed -n 's/.*"GoMod": *"\([^"]*\)".*/\1/p')"
    for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$gomod"); do
      go mod edit -replace="$m=$m@v0.${K8S#1.}"
    done
    grep '^godebug' "$gomod" >> go.mod || true
    etcd="$(sed -n 's#^[[:space:]]*go\.etcd\.io/etcd/client/v3 \(v[^[:space:]]*\).*#\1#p' "$gomod")"
    go mod edit -require="k8s.io/kubernetes@v$K8S" -require="go.etcd.io/etcd/server/v3@$etcd"
    go mod tidy >&2
    minor="$(echo "$K8S" | cut -d. -f2)"
    mkdir -p "$bin_dir"
    CGO_ENABLED=0 go build -trimpath -o "$bin.tmp" -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=v$K8S \
      -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=$minor \
      -X k8s.io/component-base/version.gitTreeState=clean" . >&2
  )
  mv "$bin.tmp" "$bin"
  # Older builds of the launcher are dead weight (about 130 MB each).
  find "$CACHE" -mindepth 1 -maxdepth 1 -name 'v*' ! -name "v$K8S-$stamp" -exec rm -rf {} +
  ln -sf kube-testcp "$bin_dir/kubectl"
  helm_build "$bin_dir"
  log "built in $((SECONDS - started)) s: $bin"
  echo "$bin"
}

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

up() {
  local dir="${1:?usage: up STATE_DIR}" bin port etcd_port pid
  port="${KUBE_TESTBED_PORT:-16443}"
  etcd_port="${KUBE_TESTBED_ETCD_PORT:-12379}"
  bin="$(build)"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if pid_alive "$(cat "$dir/pid" 2>/dev/null)"; then
    log "already running (pid $(cat "$dir/pid"))"
  else
    rm -rf "$dir/etcd" "$dir/certs"
    setsid "$bin" up --dir "$dir" --port "$port" --etcd-port "$etcd_port" >"$dir/apiserver.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
  fi
  pid="$(cat "$dir/pid")"
  local deadline=$((SECONDS + ${KUBE_TESTBED_READY_TIMEOUT:-120}))
  until [ -f "$dir/kubeconfig" ] && [ -f "$dir/certs/apiserver.crt" ] &&
    [ "$("$bin" kubectl --kubeconfig "$dir/kubeconfig" get --raw=/readyz 2>/dev/null)" = ok ]; do
    if ! pid_alive "$pid"; then log "control plane exited:"; tail -n 40 "$dir/apiserver.log" >&2; exit 1; fi
    if [ "$SECONDS" -ge "$deadline" ]; then log "not ready in time:"; tail -n 40 "$dir/apiserver.log" >&2; down "$dir"; exit 1; fi
    sleep 0.5
  done
  # The default ServiceAccount is what `kubectl create token` and namespaced tests expect.
  until "$bin" kubectl --kubeconfig "$dir/kubeconfig" get serviceaccount default -n default >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then log "controller manager did not create the default ServiceAccount:"; tail -n 40 "$dir/controller-manager.log" >&2; down "$dir"; exit 1; fi
    sleep 0.5
  done
  cat >"$dir/env.sh" <<EOF
export KUBECONFIG=$dir/kubeconfig
export KUBE_TESTBED_BIN_DIR=$(dirname "$bin")
export KUBE_TESTBED_PID=$pid
export KUBE_TESTBED_STATE_DIR=$dir
EOF
  cat "$dir/env.sh"
  log "ready: kube-apiserver v$K8S on https://127.0.0.1:$port"
}

down() {
  local dir="${1:?usage: down STATE_DIR}" pid
  pid="$(cat "$dir/pid" 2>/dev/null || true)"
  if pid_alive "$pid"; then
    # The whole session: the control plane and its controller manager.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do pid_alive "$pid" || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$dir/pid"
}

case "${1:-}" in
  build) build ;;
  up) up "${2:-}" ;;
  down) down "${2:-}" ;;
  logs) cat "${2:?usage: logs STATE_DIR}"/{apiserver,controller-manager}.log ;;
  *) echo "usage: $0 build|up DIR|down DIR|logs DIR" >&2; exit 2 ;;
esac
