#!/usr/bin/env bash
# Times `strata prune` on a repository with N archives (default 1000), the
# figure issue 3 asks for ("prune of 1,000 archives under a second").
# Usage: bench/prune_many.sh [N] [WORK_DIR]
set -euo pipefail
n=${1:-1000}
work=${2:-/tmp/strata-bench/prune-many}
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
strata=${STRATA_BIN:-$repo_root/target/release/strata}
[ -x "$strata" ] || (cd "$repo_root" && cargo build --release --quiet)
rm -rf "$work"; mkdir -p "$work/src"
export STRATA_PASSPHRASE=bench STRATA_CACHE_DIR=$work/cache
# creating 1000 archives is not what is measured: a cheap KDF keeps it short
STRATA_INSECURE_FAST_KDF=1 "$strata" init "$work/repo" 2>/dev/null
echo "small file" > "$work/src/f"
for i in $(seq -w 1 "$n"); do "$strata" create "$work/repo::host-$i" "$work/src"; done
echo "archives: $("$strata" list --short "$work/repo" | wc -l)"
/usr/bin/time -f "prune --dry-run of $n archives: %e s, %M KiB" \
  "$strata" prune --dry-run --keep-daily 7 --keep-weekly 4 --keep-monthly 12 "$work/repo" >/dev/null
/usr/bin/time -f "prune of $n archives: %e s, %M KiB" \
  "$strata" prune --keep-last 10 "$work/repo" >/dev/null
echo "archives left: $("$strata" list --short "$work/repo" | wc -l)"
/usr/bin/time -f "compact after pruning $((n - 10)) archives: %e s, %M KiB" \
  "$strata" compact --grace-period 0 "$work/repo"
