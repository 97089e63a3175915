#!/usr/bin/env bash
# The long crash and fault campaign (tests/it/campaign.rs): create, prune,
# compact, check --repair and replicate crashed at EVERY durable step (write,
# fsync, rename, directory fsync, delete), failed with EIO at every fsync,
# and SIGKILLed at KILLS random moments each. The suite runs a sample.
#   scripts/crash-campaign.sh [KILLS] [SEED]    default 100 kills, seed from the clock
# Prints, and appends to target/crash-campaign.txt, the trials and failures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
kills=${1:-100}
seed=${2:-$(date +%s)}
report="$PWD/target/crash-campaign.txt"
mkdir -p target
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo '?') kills=$kills seed=$seed" >>"$report"
STRATA_CAMPAIGN_STRIDE=1 STRATA_CAMPAIGN_KILLS="$kills" STRATA_CAMPAIGN_SEED="$seed" \
  STRATA_CAMPAIGN_REPORT="$report" \
  cargo nextest run --locked --no-fail-fast --test-threads 2 -E 'test(/^campaign::/)' --no-capture \
  2>&1 | grep -E '^campaign |FAILED|Summary' || true
tail -n 5 "$report"
! grep -q ', [1-9][0-9]* failures' <(tail -n 5 "$report")
