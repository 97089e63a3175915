#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each:
#   scripts/fuzz.sh [SECONDS] [TARGET...]      default 60 s, all targets
# CI (scripts/test.sh) runs 8 s each; before a release run an hour each
# (scripts/fuzz.sh 3600). The corpora grow in fuzz/corpus (not in git; seeds
# in fuzz/seeds are); a failing input lands in fuzz/artifacts/TARGET/ and
# `cargo +nightly fuzz run TARGET FILE` replays it. A single allocation over
# 256 MiB counts as a failure: every decoder must cap what it allocates.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"
secs=${1:-60}
shift || true
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
# FUZZ_TARGET_DIR: where the (nightly, sanitizer) build goes; CI keeps it
# outside the clone so only strata itself is rebuilt on each run.
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target}
start=$SECONDS
cargo +nightly fuzz build -O
echo "fuzz: built in $((SECONDS - start)) s"
host=$(rustc -vV | sed -n 's/^host: //p')
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  dirs=("corpus/$t")
  [ -d "seeds/$t" ] && dirs+=("seeds/$t")
  log="artifacts/$t/last-run.log"
  if "$CARGO_TARGET_DIR/$host/release/$t" "${dirs[@]}" -artifact_prefix="artifacts/$t/" \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 \
    -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz $t: ok, $runs runs in $secs s"
  else
    tail -n 40 "$log"
    echo "fuzz $t: FAILED (log $PWD/$log); replay: cargo +nightly fuzz run $t fuzz/artifacts/$t/<file>"
    failed+=("$t")
  fi
done
echo "fuzz: ${#targets[@]} targets, $((SECONDS - start)) s in all"
[ ${#failed[@]} -eq 0 ] || { echo "fuzz: failed: ${failed[*]}"; exit 1; }
