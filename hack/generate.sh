#!/usr/bin/env bash
# Regenerates crds/ from the Rust types. With --check, fails if crds/ is stale instead of writing it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
generated="$(cargo run --quiet --bin litellm-operator -- crd)"
if [ "${1:-}" = --check ]; then
  if ! diff -u crds/litellmuser.yaml <(printf '%s\n' "$generated"); then
    echo "crds/litellmuser.yaml is stale: run hack/generate.sh and commit the result" >&2
    exit 1
  fi
else
  printf '%s\n' "$generated" > crds/litellmuser.yaml
fi
