#!/usr/bin/env bash
# Runs every test of the workspace on a fresh Debian machine: installs what the tests
# need first (Debian packages), then `cargo test`. Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use, by the command that proves each is there.
declare -A packages=(
  [fiu-run]=fiu-utils   # fsync failure injection (trireme-store/tests/fsync_failure.rs)
  [fiu-ctrl]=fiu-utils
  [etcdctl]=etcd-client   # etcd's own client against the gRPC API (tests/etcdctl.rs)
  [kubectl]=kubernetes-client   # the machine image ships kubectl 1.32; Debian's is the fallback
  [ip]=iproute2        # network namespaces of the chaos harness (tests/chaos.rs)
  [nft]=nftables       # partitions inside those namespaces
  [cc]=gcc             # C parts of dependencies: jemalloc (the binary's allocator), ring
  [make]=make          # jemalloc's build
)
missing=()
for cmd in "${!packages[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${packages[$cmd]}")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $(printf '%s\n' "${missing[@]}" | sort -u)
fi

cargo test --workspace --locked "$@"
