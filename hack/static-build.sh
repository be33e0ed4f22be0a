#!/usr/bin/env bash
# Builds the static musl binary exactly as the Dockerfile does (Docker cannot run here), checks that it is
# static, and that it starts: `crd` renders and `run` fails cleanly without a master key.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
command -v musl-gcc >/dev/null || { apt-get update -qq >&2 && apt-get install -y -qq musl-tools >&2; }
rustup target add x86_64-unknown-linux-musl >&2
cargo build --quiet --release --locked --target x86_64-unknown-linux-musl --bin litellm-operator
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target_dir/x86_64-unknown-linux-musl/release/litellm-operator"
if ldd "$bin" 2>&1 | grep -q '=>'; then echo "not static: $(ldd "$bin")" >&2; exit 1; fi
env -i "$bin" crd | grep -q 'kind: CustomResourceDefinition'
out="$(env -i "$bin" run --litellm-url http://127.0.0.1:1 2>&1 || true)"
grep -q 'no master key' <<<"$out" || { echo "unexpected start-up answer: $out" >&2; exit 1; }
printf '[static-build] %s: %s bytes, static, starts\n' "$bin" "$(stat -c %s "$bin")" >&2
