#!/usr/bin/env bash
# The end-to-end suite run several times in a row while the machine is kept busy, as the proof that it does not
# flake: a test that passes only on an idle machine is a flaky test.
#
#   hack/e2e-repeat.sh [RUNS]     RUNS (default 5) runs of hack/e2e.sh, each with a CPU hog on one core
#
# Environment: E2E_REPEAT_HOG (default 1: one busy process; 0 runs on a quiet machine), and everything
# hack/e2e.sh reads. Prints one line per run (exit status and seconds) and a summary; stops at the first failure
# and leaves that run's log in the state directory it names.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
RUNS="${1:-5}"
LOGS="$(mktemp -d /tmp/litellm-operator-e2e-repeat.XXXXXX)"
hog_pid=""
stop_hog() { if [ -n "$hog_pid" ]; then kill "$hog_pid" 2>/dev/null || true; wait "$hog_pid" 2>/dev/null || true; fi; }
trap stop_hog EXIT
if [ "${E2E_REPEAT_HOG:-1}" = 1 ]; then
  # One core kept busy for as long as the runs last; a child of this script, stopped with it.
  python3 -c 'while True: pass' &
  hog_pid=$!
fi
passed=0
for run in $(seq 1 "$RUNS"); do
  started=$SECONDS
  if E2E_STATE_DIR="$LOGS/run-$run" bash "$ROOT/hack/e2e.sh" >"$LOGS/run-$run.log" 2>&1; then
    passed=$((passed + 1))
    printf '[e2e-repeat] run %d of %d passed in %d s\n' "$run" "$RUNS" $((SECONDS - started)) >&2
  else
    printf '[e2e-repeat] run %d of %d FAILED after %d s; log: %s\n' "$run" "$RUNS" $((SECONDS - started)) \
      "$LOGS/run-$run.log" >&2
    grep -E -- '--- FAILED|panicked at|timed out' "$LOGS/run-$run.log" | head -n 20 >&2 || true
    printf '%d passed, 1 failed\n' "$passed"
    exit 1
  fi
done
printf '%d passed, 0 failed\n' "$passed"
