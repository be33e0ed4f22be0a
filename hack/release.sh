#!/usr/bin/env bash
# The release steps of .github/workflows/release.yml, runnable here. The workflow calls these; `check` (run by
# hack/test.sh in CI) rehearses them without pushing anything.
#
#   hack/release.sh version TAG         the release version for a tag vX.Y.Z[-pre] (fails on anything else)
#   hack/release.sh image               the image repository the release pushes to (from values.yaml)
#   hack/release.sh chart VERSION OUT   package the chart at VERSION (chart version and appVersion, so the
#                                       image tag defaults to it) into OUT and lint the package
#   hack/release.sh assets VERSION OUT  the release assets in OUT: crds/*.yaml, the chart package, SHA256SUMS
#   hack/release.sh check               actionlint on the workflows (pinned actions, no mutable refs), the
#                                       workflow's image equal to values.yaml's, every hack/ command the
#                                       workflows run present, and chart/assets rehearsed at a test version
#
# Needs helm for chart/assets/check (hack/kube-testbed.sh builds one) and go for actionlint (installed into
# ~/.cache/litellm-operator, pinned).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
ACTIONLINT_VERSION=1.7.12
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/litellm-operator"
log() { printf '[release] %s\n' "$*" >&2; }

need_helm() {
  command -v helm >/dev/null || PATH="$(dirname "$(bash hack/kube-testbed.sh build)"):$PATH"
}

version() {
  local tag="${1:?usage: version TAG}"
  [[ "$tag" =~ ^v([0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?)$ ]] || { log "not a release tag: $tag"; exit 1; }
  echo "${BASH_REMATCH[1]}"
}

image() {
  python3 -c '
import re, sys
text = open("charts/litellm-operator/values.yaml").read()
m = re.search(r"(?m)^image:\n(?:  .*\n)*?  repository: (\S+)$", text)
print(m.group(1) if m else sys.exit("no image.repository in values.yaml"))'
}

chart() {
  local version="${1:?usage: chart VERSION OUT}" out="${2:?usage: chart VERSION OUT}" package
  need_helm
  mkdir -p "$out"
  helm package charts/litellm-operator --version "$version" --app-version "$version" -d "$out" >&2
  package="$out/litellm-operator-$version.tgz"
  helm lint --strict "$package" --set litellm.url=http://litellm:4000 --set litellm.masterKeySecret.name=k >&2
  # The packaged chart deploys the image this release pushes, at this version.
  local rendered
  rendered="$(helm template x "$package" --set litellm.url=http://litellm:4000 --set litellm.masterKeySecret.name=k \
    --show-only templates/deployment.yaml)"
  grep -q "image: \"$(image):$version\"" <<<"$rendered" || { log "the packaged chart does not run $(image):$version"; exit 1; }
  echo "$package"
}

assets() {
  local version="${1:?usage: assets VERSION OUT}" out="${2:?usage: assets VERSION OUT}"
  mkdir -p "$out"
  cp crds/*.yaml "$out/"
  chart "$version" "$out" >/dev/null
  (cd "$out" && sha256sum -- *.yaml *.tgz >SHA256SUMS)
  log "assets in $out: $(cd "$out" && echo *)"
}

actionlint_bin() {
  local dir="$CACHE/actionlint-v$ACTIONLINT_VERSION"
  if [ ! -x "$dir/actionlint" ]; then
    log "installing actionlint v$ACTIONLINT_VERSION"
    (cd "$(mktemp -d)" && GOBIN="$dir" GOFLAGS=-mod=mod go install "github.com/rhysd/actionlint/cmd/actionlint@v$ACTIONLINT_VERSION" >&2)
  fi
  echo "$dir/actionlint"
}

check() {
  local workflows=(.github/workflows/*.yml) work
  # shellcheck finds bugs in the workflows' run: blocks through actionlint.
  command -v shellcheck >/dev/null || apt-get install -y -qq shellcheck >/dev/null 2>&1 ||
    { apt-get update -qq >&2 && apt-get install -y -qq shellcheck >&2; }
  "$(actionlint_bin)" -no-color "${workflows[@]}"
  python3 - "$(image)" "${workflows[@]}" <<'PY'
import os, re, sys
image, files = sys.argv[1], sys.argv[2:]
problems = []
for path in files:
    text = open(path).read()
    # Every action pinned to a full commit, with the version it is in a comment.
    for line in re.findall(r"(?m)^\s*(?:-\s*)?uses:\s*(.+)$", text):
        if line.startswith("./"):
            continue
        if not re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40} # v\d+(\.\d+)*", line.strip()):
            problems.append(f"{path}: action not pinned to a commit with its version: {line}")
    # Every hack/ script the workflow runs exists.
    for script in set(re.findall(r"hack/[\w./-]+", text)):
        if not os.path.exists(script):
            problems.append(f"{path}: runs {script}, which does not exist")
release = open(".github/workflows/release.yml").read()
declared = re.search(r"(?m)^\s+IMAGE:\s*(\S+)$", release)
if not declared or declared.group(1) != image:
    problems.append(f"release.yml pushes {declared and declared.group(1)}, values.yaml deploys {image}")
if problems:
    sys.exit("\n".join(problems))
PY
  [ "$(version v1.2.3-rc.1)" = 1.2.3-rc.1 ] && ! (version 1.2.3 >/dev/null 2>&1) && ! (version v1.2 >/dev/null 2>&1)
  work="$(mktemp -d)"
  assets 0.0.0-ci "$work"
  (cd "$work" && sha256sum -c --quiet SHA256SUMS)
  rm -rf "$work"
  log "workflows lint clean, image $(image) agrees, release steps rehearsed"
}

case "${1:-}" in
  version) version "${2:-}" ;;
  image) image ;;
  chart) chart "${2:-}" "${3:-}" ;;
  assets) assets "${2:-}" "${3:-}" ;;
  check) check ;;
  *) echo "usage: $0 version TAG|image|chart VERSION OUT|assets VERSION OUT|check" >&2; exit 2 ;;
esac
