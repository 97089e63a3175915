#!/usr/bin/env bash
# The load benchmark (tests/it/load.rs) at full size: HOSTS hosts, each its
# own key and repository, back up MIB MiB per round at once to one central
# node over real SSH on loopback, for ROUNDS rounds, while the central node
# replicates every repository to an off-site one, again and again.
#   scripts/load-bench.sh [HOSTS] [MIB] [ROUNDS]      default 20 32 2
# Prints (and appends to target/load-bench.txt) aggregate throughput and the
# p50/p99 RPC round trip. The test binary is the debug build (dependencies
# optimised, strata itself not): release figures are higher.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p target
report="$PWD/target/load-bench.txt"
echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(nproc) cores" >>"$report"
STRATA_LOAD_HOSTS=${1:-20} STRATA_LOAD_MIB=${2:-32} STRATA_LOAD_ROUNDS=${3:-2} \
  STRATA_LOAD_REPORT="$report" \
  cargo nextest run --locked -E 'test(/^load::/)' --no-capture 2>&1 | grep -E '^load:|FAIL|panicked|Summary'
tail -n 1 "$report" | grep -q '^load:'
