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
#   BENCH_LITELLM_VERSION=1.108.7 BENCH_SIZES=1000 hack/bench.sh
#                                       against the real LiteLLM proxy of the test bed (../shared/testbed/litellm,
#                                       or LITELLM_TESTBED_DIR) instead of the emulator; figures go to
#                                       docs/bench-results-real.json, not BENCHMARKS.md
#   BENCH_PROFILE=1 BENCH_SIZES=10000 hack/bench.sh
#                                       heap profiles (dhat) of each operator run, summarised by
#                                       hack/dhat_summary.py; the figures of a profiled run are not comparable
#   BENCH_PROFILE=jemalloc BENCH_CREATION_ONLY=1 BENCH_SIZES=100000 hack/bench.sh
#                                       sampled heap profiles (jemalloc's), cheap enough for 100,000 users: what was
#                                       live at each run's peak, summarised by
#                                       hack/jeprof_summary.py
#   BENCH_CONTROL_PLANE_PROFILE=1 BENCH_CREATION_ONLY=1 BENCH_SIZES=10000 hack/bench.sh
#                                       a CPU profile of etcd and kube-apiserver (one process here) over 30 s of
#                                       creation (BENCH_CONTROL_PLANE_PROFILE_SECONDS), summarised by go tool pprof
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
STATE="$(mktemp -d /tmp/litellm-operator-bench.XXXXXX)"
LITELLM_TESTBED_DIR="${LITELLM_TESTBED_DIR:-$ROOT/../shared/testbed/litellm}"
cleanup() {
  KUBE_TESTBED_PORT=16743 bash hack/kube-testbed.sh down "$STATE/kube" || true
  if [ -n "${BENCH_LITELLM_VERSION:-}" ]; then bash "$LITELLM_TESTBED_DIR/down.sh" "$STATE/litellm" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
if [ -n "${OPERATOR_BIN:-}" ]; then
  : # a binary of the caller's (say, another allocator's build)
elif [ -n "${BENCH_PROFILE:-}" ]; then
  case "$BENCH_PROFILE" in
    1) PROFILER=dhat FEATURE=dhat-heap ;;
    jemalloc) PROFILER=jemalloc FEATURE=jemalloc-profiling ;;
    *) echo "BENCH_PROFILE is 1 (dhat) or jemalloc" >&2; exit 2 ;;
  esac
  # Symbols for the profile's backtraces; its own target dir, so the normal release build stays as it is.
  CARGO_TARGET_DIR="$TARGET_DIR/$PROFILER" CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    cargo build --quiet --release --bin litellm-operator --features "$FEATURE"
  OPERATOR_BIN="$TARGET_DIR/$PROFILER/release/litellm-operator"
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
if [ -n "${BENCH_LITELLM_VERSION:-}" ]; then
  # Ports of its own, beside the test suite's proxies, and below the ephemeral range (see hack/e2e.sh).
  eval "$(bash "$LITELLM_TESTBED_DIR/up.sh" "$STATE/litellm" --version "$BENCH_LITELLM_VERSION" --port 4650 --pg-port 15650)"
  export BENCH_LITELLM_URL="$LITELLM_URL" BENCH_LITELLM_MASTER_KEY="$LITELLM_MASTER_KEY"
fi
export BENCH_OUT="$STATE/results.json"
if [ "${BENCH_CONTROL_PLANE_PROFILE:-}" = 1 ]; then
  export BENCH_CONTROL_PLANE_PROFILE="$STATE/profiles"
  mkdir -p "$BENCH_CONTROL_PLANE_PROFILE"
fi
cargo bench --quiet --bench scale
if [ -n "${BENCH_LITELLM_VERSION:-}" ]; then
  python3 - "$BENCH_OUT" "$BENCH_LITELLM_VERSION" docs/bench-results-real.json <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))
for result in results:
    result["litellm_version"] = sys.argv[2]
json.dump(results, open(sys.argv[3], "w"), indent=2)
PY
  echo "[bench] real-proxy figures in docs/bench-results-real.json" >&2
  exit 0
fi
if [ -n "${BENCH_CONTROL_PLANE_PROFILE:-}" ]; then
  for profile in "$BENCH_CONTROL_PLANE_PROFILE"/control-plane-*.pprof; do
    echo "== $profile: by cumulative time" >&2
    go tool pprof -top -cum -nodecount=60 "$profile" 2>/dev/null >&2 || true
    echo "== $profile: by own time" >&2
    go tool pprof -top -nodecount=30 "$profile" 2>/dev/null >&2 || true
  done
fi
if [ "${BENCH_PROFILE:-}" = 1 ]; then
  for profile in "$BENCH_PROFILE_DIR"/*.json; do python3 hack/dhat_summary.py "$profile"; done
  echo "[bench] heap profiles in $BENCH_PROFILE_DIR (open them in https://nnethercote.github.io/dh_view/dh_view.html)" >&2
elif [ "${BENCH_PROFILE:-}" = jemalloc ]; then
  # jemalloc writes a profile at each new high-water mark of the heap; the last of a run is its peak's.
  for run in $(ls "$BENCH_PROFILE_DIR" | sed -n 's/^\(jeprof-.*\)\.[0-9]*\.[0-9]*\.u[0-9]*\.heap$/\1/p' | sort -u); do
    peak="$(ls -v "$BENCH_PROFILE_DIR/$run".*.heap | tail -n 1)"
    python3 hack/jeprof_summary.py "$OPERATOR_BIN" "$peak" 40
  done
  # jemalloc's build leaves its own reader (a Perl script) beside the library, for call graphs.
  JEPROF="$(find "$TARGET_DIR/jemalloc/release/build" -path '*tikv-jemalloc-sys-*/out/build/bin/jeprof' | head -n 1)"
  echo "[bench] heap profiles in $BENCH_PROFILE_DIR (perl $JEPROF --text $OPERATOR_BIN <profile>)" >&2
elif [ "${BENCH_CREATION_ONLY:-}" != 1 ]; then
  python3 hack/bench_report.py "$BENCH_OUT" "${BENCH_SIZES:-100 1000 10000}"
fi
