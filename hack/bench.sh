#!/usr/bin/env bash
# The scale benchmark: the real operator binary (the image's static release build) against a real kube-apiserver (its own control
# plane on other ports than the test suite's) and the LiteLLM emulator (crates/litellm-emulator, in the benchmark's
# process), for 100, 1,000 and 10,000 users.
# Prints the figures and writes BENCHMARKS.md (with the command, the machine and a plot).
#
#   hack/bench.sh                       all sizes (about 15 minutes on 2 cores)
#   BENCH_SIZES="100 1000" hack/bench.sh
#   BENCH_CREATION_ONLY=1 BENCH_SIZES=10000 hack/bench.sh
#                                       creation only (time to Ready, peak RSS): to compare builds quickly
#   OPERATOR_BIN=path/to/litellm-operator hack/bench.sh
#                                       another build of the operator (say, with another allocator)
#   BENCH_PROFILE=1 BENCH_SIZES=10000 hack/bench.sh
#                                       heap profiles (dhat) of each operator run, summarised by
#                                       hack/dhat_summary.py; the figures of a profiled run are not comparable
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
STATE="$(mktemp -d /tmp/litellm-operator-bench.XXXXXX)"
trap 'KUBE_TESTBED_PORT=16743 bash hack/kube-testbed.sh down "$STATE/kube" || true' EXIT
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
if [ -n "${OPERATOR_BIN:-}" ]; then
  : # a binary of the caller's (say, another allocator's build)
elif [ "${BENCH_PROFILE:-}" = 1 ]; then
  # Symbols for the profile's backtraces; its own target dir, so the normal release build stays as it is.
  CARGO_TARGET_DIR="$TARGET_DIR/dhat" CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    cargo build --quiet --release --bin litellm-operator --features dhat-heap
  OPERATOR_BIN="$TARGET_DIR/dhat/release/litellm-operator"
  export BENCH_PROFILE_DIR="$STATE/profiles"
  mkdir -p "$BENCH_PROFILE_DIR"
else
  # The binary the image ships: static, musl.
  bash hack/static-build.sh
  OPERATOR_BIN="$TARGET_DIR/$(uname -m)-unknown-linux-musl/release/litellm-operator"
fi
export OPERATOR_BIN
eval "$(KUBE_TESTBED_PORT=16743 KUBE_TESTBED_ETCD_PORT=12679 bash hack/kube-testbed.sh up "$STATE/kube")"
export PATH="$KUBE_TESTBED_BIN_DIR:$PATH"
kubectl apply -f crds/ >/dev/null
kubectl wait --for=condition=Established crd/litellmusers.litellm-operator.io >/dev/null
export BENCH_OUT="$STATE/results.json"
cargo bench --quiet --bench scale
if [ "${BENCH_PROFILE:-}" = 1 ]; then
  for profile in "$BENCH_PROFILE_DIR"/*.json; do python3 hack/dhat_summary.py "$profile"; done
  echo "[bench] heap profiles in $BENCH_PROFILE_DIR (open them in https://nnethercote.github.io/dh_view/dh_view.html)" >&2
elif [ "${BENCH_CREATION_ONLY:-}" != 1 ]; then
  python3 hack/bench_report.py "$BENCH_OUT" "${BENCH_SIZES:-100 1000 10000}"
fi
