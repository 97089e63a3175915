#!/usr/bin/env bash
# Runs the micro-benchmarks (benches/micro/, see bench/README.md) and saves
# their output. Arguments go to divan: a filter (`aead`, `index`) and/or
# flags (`--max-time 10`, `--sample-count 200`).
#   bench/micro.sh                 # all, ~3 minutes after the build
#   MICRO_OUT=f.txt bench/micro.sh compress
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${MICRO_OUT:-target/micro-$(date -u +%Y%m%dT%H%M%SZ).txt}
mkdir -p "$(dirname "$out")"
cargo bench --locked --bench micro --no-run
{
  echo "strata $(git rev-parse --short HEAD), $(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  cargo bench --locked --bench micro -- "$@"
} 2>&1 | tee "$out"
echo "saved in $out"
