#!/usr/bin/env bash
# strata mount versus borg mount, on the same data, in one run:
#   - sequential read of a 1 GiB file (random bytes) through the mount,
#     beside `extract` of the same file (the issue's target: >= 50 %);
#   - listing an archive of ~40k files through the mount (`find`, and
#     `ls -lR`, which stats every entry), target under 2 s;
#   - mounting a repository of N archives (default 1000) and listing its
#     top directory (must not read the archives).
# The page cache is dropped before each timed read where the kernel lets
# us (root), so the repository is read from disk as a user would.
# Usage: bench/mount.sh [DATA_DIR] [WORK_DIR] [N]     (needs root and /dev/fuse)
set -euo pipefail
data=${1:-/tmp/strata-bench/data}
work=${2:-/tmp/strata-bench/mount}
n=${3:-1000}
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
strata=${STRATA_BIN:-$repo_root/target/release/strata}
[ -x "$strata" ] || (cd "$repo_root" && cargo build --release --quiet)
[ -d "$data/mixed" ] || "$repo_root/../shared/bench/make_datasets.sh" "$data"
need=()
command -v borg >/dev/null || need+=(borgbackup)
python3 -c 'import llfuse' 2>/dev/null || need+=(python3-llfuse)
command -v fusermount3 >/dev/null || need+=(fuse3)
[ -x /usr/bin/time ] || need+=(time)
[ ${#need[@]} -eq 0 ] || apt-get install -y -qq "${need[@]}"

rm -rf "$work"; mkdir -p "$work/big" "$work/mnt" "$work/out"
cleanup() { umount -l "$work/mnt" 2>/dev/null || true; }
trap cleanup EXIT
export STRATA_PASSPHRASE=bench BORG_PASSPHRASE=bench
export STRATA_CACHE_DIR=$work/strata-cache BORG_BASE_DIR=$work/borg-base
head -c 1073741824 /dev/urandom > "$work/big/file.bin"
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
t() { /usr/bin/time -f "%e" "$@" 2>&1 >/dev/null | tail -1; }
mbps() { awk -v s="$1" 'BEGIN { printf "%.0f", 1073.741824 / s }'; }
wait_mounted() { for _ in $(seq 200); do mountpoint -q "$1" && return 0; sleep 0.05; done; return 1; }

"$strata" init -e repokey "$work/s-repo" >/dev/null
"$strata" create "$work/s-repo::big" "$work/big" >/dev/null
"$strata" create "$work/s-repo::mixed" "$data/mixed" >/dev/null
borg init -e repokey-blake2 "$work/b-repo"
borg create "$work/b-repo::big" "$work/big"
borg create "$work/b-repo::mixed" "$data/mixed"
rel=${work#/}/big/file.bin

drop; s_extract=$(cd "$work/out" && t "$strata" extract "$work/s-repo::big"); rm -rf "$work/out"/*
drop; b_extract=$(cd "$work/out" && t borg extract "$work/b-repo::big"); rm -rf "$work/out"/*

"$strata" mount "$work/s-repo" "$work/mnt"
drop; s_cat=$(t cat "$work/mnt/big/$rel")
s_find=$(t find "$work/mnt/mixed" -type f)
s_files=$(find "$work/mnt/mixed" -type f | wc -l)
"$strata" umount "$work/mnt"
"$strata" mount "$work/s-repo::mixed" "$work/mnt"
s_lsR=$(t ls -lR "$work/mnt")
"$strata" umount "$work/mnt"

borg mount "$work/b-repo" "$work/mnt"; wait_mounted "$work/mnt"
drop; b_cat=$(t cat "$work/mnt/big/$rel")
b_find=$(t find "$work/mnt/mixed" -type f)
borg umount "$work/mnt"
borg mount "$work/b-repo::mixed" "$work/mnt"; wait_mounted "$work/mnt"
b_lsR=$(t ls -lR "$work/mnt")
borg umount "$work/mnt"

# Many archives: creating them is not what is measured (a cheap KDF).
mkdir -p "$work/tiny"; echo small > "$work/tiny/f"
STRATA_INSECURE_FAST_KDF=1 "$strata" init "$work/many" >/dev/null
for i in $(seq -w 1 "$n"); do "$strata" create "$work/many::a-$i" "$work/tiny"; done
s_many=$(/usr/bin/time -f "%e" sh -c "'$strata' mount '$work/many' '$work/mnt' && ls '$work/mnt' | wc -l" 2>&1 | tr '\n' ' ')
"$strata" umount "$work/mnt"

cat <<EOF
| figure | strata | borg | strata / borg |
|---|---:|---:|---:|
| extract 1 GiB | ${s_extract} s ($(mbps "$s_extract") MB/s) | ${b_extract} s ($(mbps "$b_extract") MB/s) | |
| cat 1 GiB through the mount | ${s_cat} s ($(mbps "$s_cat") MB/s) | ${b_cat} s ($(mbps "$b_cat") MB/s) | $(awk -v a="$b_cat" -v b="$s_cat" 'BEGIN { printf "%.1fx faster", a / b }') |
| mount read / extract | $(awk -v a="$s_extract" -v b="$s_cat" 'BEGIN { printf "%.0f %%", 100 * a / b }') | $(awk -v a="$b_extract" -v b="$b_cat" 'BEGIN { printf "%.0f %%", 100 * a / b }') | |
| find, ${s_files} files (first look) | ${s_find} s | ${b_find} s | |
| ls -lR of the archive | ${s_lsR} s | ${b_lsR} s | |
| mount ${n} archives + ls (count, s) | ${s_many} | | |
EOF
