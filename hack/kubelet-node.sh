#!/usr/bin/env bash
# A real node on this machine: a kubelet built from the same k8s.io/kubernetes module as the test bed's control
# plane (hack/kube-testbed.sh), with containerd (Debian's package; the kubelet needs a CRI runtime, which podman
# is not) and runc, registering with a running test bed, and the chart's pod running on it. What it takes and
# what does not work is written down in docs/kubelet.md.
#
#   hack/kubelet-node.sh build            build kubelet v$K8S_VERSION (cached) and print its path
#   hack/kubelet-node.sh up STATE_DIR     containerd + kubelet against KUBECONFIG's test bed, plus a second
#                                            controller manager for Deployments (the test bed runs none);
#                                            waits for the Node to be Ready
#   hack/kubelet-node.sh pod STATE_DIR    the chart installed with the image (IMAGE, default
#                                            localhost/litellm-operator:dev, from podman) against LITELLM_URL /
#                                            LITELLM_MASTER_KEY; waits for the pod to be Ready, a LiteLLMUser to be
#                                            Ready, and checks what the container's process runs with
#   hack/kubelet-node.sh down STATE_DIR
#
# Environment: K8S_VERSION (default 1.35.4), KUBELET_PORT (default 18250), KUBELET_HEALTHZ_PORT (default
# 18248), KUBELET_METRICS_PORT (the pod's metrics port on the host network, default 18081).
# hack/e2e.sh runs up, pod and down as its last step. The pod needs patches the chart does not make, because
# the test bed is not a full cluster (docs/kubelet.md).
set -euo pipefail
K8S="${K8S_VERSION:-1.35.4}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/litellm-operator/kubelet"
log() { printf '[kubelet-node] %s\n' "$*" >&2; }
# A release of its own beside any other (the end-to-end suite's is litellm-operator in litellm-system); the CRD
# must already be installed.
RELEASE=node-test NS=litellm-node

build() {
  local bin="$CACHE/v$K8S/kubelet" work
  if [ -x "$bin" ]; then echo "$bin"; return; fi
  work="$(mktemp -d)"
  mkdir -p "$(dirname "$bin")"
  (
    cd "$work"
    printf 'package main\n\nimport _ "k8s.io/kubernetes/cmd/kubelet/app"\n\nfunc main() {}\n' >tools.go
    go mod init example.invalid/kubelet >/dev/null 2>&1
    # The same mapping of k8s.io/kubernetes' staging modules to their tags as hack/kube-testbed.sh.
    local gomod minor
    gomod="$(go mod download -json "k8s.io/kubernetes@v$K8S" | sed -n 's/.*"GoMod": *"\([^"]*\)".*/\1/p')"
    for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$gomod"); do
      go mod edit -replace="$m=$m@v0.${K8S#1.}"
    done
    grep '^godebug' "$gomod" >>go.mod || true
    go mod edit -require="k8s.io/kubernetes@v$K8S"
    go mod tidy >&2
    minor="$(echo "$K8S" | cut -d. -f2)"
    CGO_ENABLED=0 go build -trimpath -o "$bin.tmp" -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=v$K8S -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean" \
      k8s.io/kubernetes/cmd/kubelet >&2
  )
  rm -rf "$work"
  mv "$bin.tmp" "$bin"
  echo "$bin"
}

# A pause image made here (no registry can be reached): a static binary that waits for a signal.
pause_image() {
  local dir="$1"
  mkdir -p "$dir/pause"
  cat >"$dir/pause/pause.c" <<'C'
#include <signal.h>
#include <unistd.h>
static void done(int sig) { (void)sig; _exit(0); }
int main(void) { signal(SIGTERM, done); signal(SIGINT, done); for (;;) pause(); }
C
  musl-gcc -static -O2 -o "$dir/pause/pause" "$dir/pause/pause.c"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$dir/pause/Containerfile"
  podman image exists localhost/pause:3.10 ||
    buildah bud --quiet --layers=false -t localhost/pause:3.10 "$dir/pause" >/dev/null
  rm -f "$dir/pause.tar"
  podman save --format docker-archive -o "$dir/pause.tar" localhost/pause:3.10 >/dev/null
}

up() {
  local dir="${1:?usage: up STATE_DIR}" port="${KUBELET_PORT:-18250}" kubelet node
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if ! command -v containerd >/dev/null || [ ! -x /usr/lib/cni/bridge ]; then
    apt-get install -y -qq containerd containernetworking-plugins >/dev/null 2>&1 ||
      { apt-get update -qq >&2 && apt-get install -y -qq containerd containernetworking-plugins >&2; }
  fi
  command -v musl-gcc >/dev/null || apt-get install -y -qq musl-tools >&2
  kubelet="$(build)"
  pause_image "$dir"
  mkdir -p "$dir/containerd/root" "$dir/containerd/state" "$dir/cni/net.d" "$dir/kubelet"
  # containerd of our own (socket, root and state in STATE_DIR), the native snapshotter (no overlayfs in a
  # nested container), runc with cgroupfs, and a bridge network for pods.
  cat >"$dir/containerd/config.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
[grpc]
  address = "$dir/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:3.10"
  enable_unprivileged_ports = false
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
EOF
  cat >"$dir/cni/net.d/10-bridge.conflist" <<'EOF'
{"cniVersion": "0.4.0", "name": "kubelet-attempt", "plugins": [
  {"type": "bridge", "bridge": "kattempt0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.233.0.0/24"}]]}},
  {"type": "loopback"}]}
EOF
  setsid containerd --config "$dir/containerd/config.toml" >"$dir/containerd.log" 2>&1 </dev/null &
  echo $! >"$dir/containerd.pid"
  local deadline=$((SECONDS + 60))
  until ctr --address "$dir/containerd/containerd.sock" version >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || { log "containerd did not start:"; tail -n 20 "$dir/containerd.log" >&2; exit 1; }
    sleep 0.5
  done
  ctr --address "$dir/containerd/containerd.sock" -n k8s.io images import "$dir/pause.tar" >&2
  node="kubelet-attempt"
  cat >"$dir/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
protectKernelDefaults: false
port: $port
healthzPort: ${KUBELET_HEALTHZ_PORT:-18248}
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
address: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
localStorageCapacityIsolation: false
podLogsDir: $dir/pod-logs
EOF
  setsid "$kubelet" --config "$dir/kubelet/config.yaml" --kubeconfig "${KUBECONFIG:?KUBECONFIG of the test bed}" \
    --container-runtime-endpoint "unix://$dir/containerd/containerd.sock" --root-dir "$dir/kubelet/root" \
    --cert-dir "$dir/kubelet/pki" --hostname-override "$node" --node-ip 127.0.0.1 -v 2 \
    >"$dir/kubelet.log" 2>&1 </dev/null &
  echo $! >"$dir/kubelet.pid"
  deadline=$((SECONDS + 120))
  until kubectl get node "$node" >/dev/null 2>&1; do
    if ! kill -0 "$(cat "$dir/kubelet.pid")" 2>/dev/null; then
      log "the kubelet exited:"; grep -E '^[EF][0-9]{4}' "$dir/kubelet.log" | tail -n 15 >&2 || tail -n 15 "$dir/kubelet.log" >&2
      exit 1
    fi
    [ "$SECONDS" -lt "$deadline" ] || { log "the Node did not register"; tail -n 20 "$dir/kubelet.log" >&2; exit 1; }
    sleep 1
  done
  # The test bed's controller manager runs only the controllers the suite needs; Deployments need two more,
  # and pods need the kube-root-ca.crt ConfigMap.
  setsid "$KUBE_TESTBED_BIN_DIR/kube-testcp" kube-controller-manager --kubeconfig="$KUBECONFIG" --leader-elect=false \
    --secure-port=0 --controllers=deployment,replicaset,root-ca-cert-publisher \
    --root-ca-file="$KUBE_TESTBED_STATE_DIR/certs/apiserver.crt" >"$dir/controller-manager.log" 2>&1 </dev/null &
  echo $! >"$dir/controller-manager.pid"
  kubectl wait --for=condition=Ready --timeout=60s "node/$node" >&2
  log "node $node: $(kubectl get node "$node" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {end}')"
}

pod() {
  local dir="${1:?usage: pod STATE_DIR}" image="${IMAGE:-localhost/litellm-operator:dev}" port="${KUBELET_METRICS_PORT:-18081}"
  local sock api_port
  dir="$(cd "$dir" && pwd)"
  sock="$dir/containerd/containerd.sock"
  : "${LITELLM_URL:?}" "${LITELLM_MASTER_KEY:?}"
  rm -f "$dir/image.tar"
  podman save --format docker-archive -o "$dir/image.tar" "$image" >/dev/null
  ctr --address "$sock" -n k8s.io images import "$dir/image.tar" >&2
  kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl -n "$NS" create secret generic litellm-master-key --from-literal=masterkey="$LITELLM_MASTER_KEY" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  api_port="$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}' | sed 's/.*://')"
  # A fresh release each time: the patches below are not the chart's, and an upgrade would merge them again.
  helm uninstall "$RELEASE" -n "$NS" --ignore-not-found --wait >&2
  # No kube-proxy: the in-cluster address of the API server is its real one.
  helm upgrade --install "$RELEASE" "$(dirname "$0")/../charts/litellm-operator" -n "$NS" --set crds.install=false \
    --set litellm.url="$LITELLM_URL" --set litellm.masterKeySecret.name=litellm-master-key \
    --set image.repository="${image%:*}" --set image.tag="${image##*:}" --set image.pullPolicy=Never \
    --set metrics.port="$port" --set 'extraEnv[0].name=KUBERNETES_SERVICE_HOST' --set 'extraEnv[0].value=127.0.0.1' \
    --set 'extraEnv[1].name=KUBERNETES_SERVICE_PORT' --set-string "extraEnv[1].value=$api_port" >&2
  # What the chart cannot say and this node needs: a node name (no scheduler), the host network (the proxy and
  # the API server listen on loopback only), the service account volume (the test bed's API server runs without
  # the ServiceAccount admission plugin, which adds it), and Recreate (a host port cannot be shared by the old
  # and the new pod of a rolling update: the kubelet rejects the new one, and the ReplicaSet makes another).
  kubectl -n "$NS" patch deployment "$RELEASE-litellm-operator" --type=json -p '[
    {"op":"add","path":"/spec/template/spec/nodeName","value":"kubelet-attempt"},
    {"op":"add","path":"/spec/template/spec/hostNetwork","value":true},
    {"op":"replace","path":"/spec/strategy","value":{"type":"Recreate"}},
    {"op":"add","path":"/spec/template/spec/volumes/-","value":{"name":"kube-api-access","projected":{"sources":[
      {"serviceAccountToken":{"path":"token","expirationSeconds":3607}},
      {"configMap":{"name":"kube-root-ca.crt","items":[{"key":"ca.crt","path":"ca.crt"}]}},
      {"downwardAPI":{"items":[{"path":"namespace","fieldRef":{"fieldPath":"metadata.namespace"}}]}}]}}},
    {"op":"add","path":"/spec/template/spec/containers/0/volumeMounts/-","value":{"name":"kube-api-access",
      "mountPath":"/var/run/secrets/kubernetes.io/serviceaccount","readOnly":true}}]' >&2
  kubectl -n "$NS" rollout status "deployment/$RELEASE-litellm-operator" --timeout=120s >&2
  kubectl create namespace kubelet-attempt --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  printf 'apiVersion: litellm-operator.io/v1alpha1\nkind: LiteLLMUser\nmetadata: {name: on-a-node}\nspec: {maxBudget: 5}\n' |
    kubectl apply -n kubelet-attempt -f - >&2
  kubectl wait -n kubelet-attempt --for=condition=Ready --timeout=60s litellmuser/on-a-node >&2
  kubectl get -n kubelet-attempt secret on-a-node-litellm-key >/dev/null
  local pid
  for pid in $(ctr --address "$sock" -n k8s.io tasks ls | awk 'NR > 1 {print $2}'); do
    if [ "$(cat "/proc/$pid/comm")" = litellm-operato ]; then
      log "operator process $pid: $(grep -E '^(Uid|Gid|CapEff|CapBnd|NoNewPrivs|Seccomp):' "/proc/$pid/status" | tr -s '\t\n' '  ')root $(awk '$5 == "/" {print $6}' "/proc/$pid/mountinfo")"
    fi
  done
  kubectl delete -n kubelet-attempt litellmuser/on-a-node --wait=true --timeout=60s >&2
  helm uninstall "$RELEASE" -n "$NS" --wait >&2
  log "the chart's pod ran on the kubelet and reconciled a LiteLLMUser to Ready"
}

down() {
  local dir="${1:?usage: down STATE_DIR}" pid
  for f in controller-manager kubelet containerd; do
    pid="$(cat "$dir/$f.pid" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$dir/$f.pid"
  done
  # The kubelet's volume mounts (projected tokens, Secrets) outlive it.
  grep -o " $dir/[^ ]*" /proc/self/mounts | sort -r | while read -r mount; do umount "$mount" 2>/dev/null || true; done
}

case "${1:-}" in
  build) build ;;
  up) up "${2:-}" ;;
  pod) pod "${2:-}" ;;
  down) down "${2:-}" ;;
  *) echo "usage: $0 build|up DIR|pod DIR|down DIR" >&2; exit 2 ;;
esac
