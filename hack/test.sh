#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting and lints, unit tests, the generated-files check (CRDs and
# the API reference), the static build, the workflows and release rehearsal, and the end-to-end suite on the
# real test bed (hack/e2e.sh: chart, image, Prometheus and alerts, GitOps CRDs). Prints how long each phase took.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
start=$SECONDS
phase() { printf '[test] %s: %d s\n' "$1" $((SECONDS - start)) >&2; start=$SECONDS; }

cargo fmt --all -- --check
cargo clippy --quiet --workspace --all-targets -- -D warnings
phase "format and lints"

cargo test --quiet --workspace
phase "unit tests"

bash hack/generate.sh --check
phase "generated files are fresh"

bash hack/static-build.sh
phase "static binary, built as the Dockerfile builds it"

bash hack/release.sh check
phase "workflows (actionlint) and the release steps rehearsed"

bash hack/e2e.sh
phase "end-to-end suite (with the chart checks)"
