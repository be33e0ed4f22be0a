#!/usr/bin/env bash
# Builds the static musl binary exactly as the Dockerfile does (for this machine's architecture), checks that it
# is static, and that it starts: `crd` renders and `run` fails cleanly without a master key.
#
#   hack/static-build.sh               build and check; the binary's path is the last line on stderr
#   hack/static-build.sh --dist DIR    also lay out DIR as the Dockerfile's BINARY=prebuilt stage reads it:
#                                      DIR/<arch>/litellm-operator (arch as Docker names it: amd64, arm64) and
#                                      DIR/ca-certificates.crt (this machine's CA bundle)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
dist=""
case "${1:-}" in
  --dist) dist="${2:?--dist needs a directory}" ;;
  "") ;;
  *) echo "usage: $0 [--dist DIR]" >&2; exit 2 ;;
esac
machine="$(uname -m)"
case "$machine" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) echo "unsupported architecture $machine" >&2; exit 1 ;;
esac
target="$machine-unknown-linux-musl"
command -v musl-gcc >/dev/null || { apt-get update -qq >&2 && apt-get install -y -qq musl-tools >&2; }
rustup target add "$target" >&2
cargo build --quiet --release --locked --target "$target" --bin litellm-operator
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target_dir/$target/release/litellm-operator"
if ldd "$bin" 2>&1 | grep -q '=>'; then echo "not static: $(ldd "$bin")" >&2; exit 1; fi
env -i "$bin" crd | grep -q 'kind: CustomResourceDefinition'
out="$(env -i "$bin" run --litellm-url http://127.0.0.1:1 2>&1 || true)"
grep -q 'no master key' <<<"$out" || { echo "unexpected start-up answer: $out" >&2; exit 1; }
if [ -n "$dist" ]; then
  mkdir -p "$dist/$arch"
  install -m 0755 "$bin" "$dist/$arch/litellm-operator"
  install -m 0644 /etc/ssl/certs/ca-certificates.crt "$dist/ca-certificates.crt"
fi
printf '[static-build] %s: %s bytes, static, starts\n' "$bin" "$(stat -c %s "$bin")" >&2
