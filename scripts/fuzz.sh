#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS_PER_TARGET seconds (default 30):
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
# Installs cargo-fuzz if it is missing. Stable Rust: RUSTC_BOOTSTRAP=1 lets it take the
# -Z flags cargo-fuzz passes (-Zsanitizer=address, sancov). Address sanitizer by default
# (FUZZ_SANITIZER=none to turn it off). Exits non-zero if any target finds a crash; the
# input is in fuzz/artifacts/<target>/ and the run's output in fuzz/artifacts/<target>.log.
# Reproduce one: RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/<file>
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
sanitizer="${FUZZ_SANITIZER:-address}"
targets=(etcd_json peer_batch proposal snapshot_restore)
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

start=$SECONDS
# One build of every target (they share all dependencies); each run below finds it done.
cargo fuzz build --sanitizer "$sanitizer"
echo "fuzz build: $((SECONDS - start))s"

mkdir -p fuzz/artifacts
failed=()
for t in "${targets[@]}"; do
  log="fuzz/artifacts/$t.log"
  t0=$SECONDS
  # -timeout: an input that takes longer is a finding (a hang) too.
  if cargo fuzz run --sanitizer "$sanitizer" "$t" -- \
      -max_total_time="$seconds" -timeout=20 -print_final_stats=1 >"$log" 2>&1; then
    echo "$t: ok ($((SECONDS - t0))s): $(grep -E '^Done [0-9]+ runs' "$log" || true)"
  else
    echo "$t: FAILED ($((SECONDS - t0))s); last lines of $log:"
    tail -n 60 "$log"
    failed+=("$t")
  fi
done

echo "fuzz total: $((SECONDS - start))s"
if ((${#failed[@]})); then
  echo "fuzz targets with findings: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
echo "fuzz: ${#targets[@]} passed, 0 failed"
