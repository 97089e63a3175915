#!/usr/bin/env bash
# Side-by-side benchmark of strata against borg and restic on the same data, in one run.
# See bench/README.md.
#
# Usage: bench/run.sh [--data DIR] [--work DIR] [TOOL...]
#   TOOL: strata borg restic (default), also borg-zstd (borg 1.2, zstd,3) and borg2 (borg 2 beta)
#   --data DIR   datasets from make_datasets.sh (default /tmp/strata-bench/data; built if missing)
#   --work DIR   scratch: repos, source copy, restores, logs, results (default /tmp/strata-bench/work)
#   --scratch-fs SIZE  put the work directory on a fresh ext4 (with a journal, as on a server) of
#                SIZE (e.g. 14G) in a loop-mounted image, removed at the end; needs root. Use it
#                where the root file system has no journal: ext4 without one makes creating files
#                right after a large deletion slow for every tool (the extract step then
#                measures the file system)
# Environment:
#   STRATA_BIN   strata binary (default: target/release/strata under the repo root;
#                built with `cargo build --release` if that default is missing)
#   BENCH_KIT    directory holding make_datasets.sh (default: ../shared/bench beside the repo,
#                else /work/shared/bench)
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
data=/tmp/strata-bench/data
work=/tmp/strata-bench/work
tools=()
scratch_size=

usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "run.sh: $*" >&2; exit 2; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

while [ $# -gt 0 ]; do
  case $1 in
    --data) [ $# -ge 2 ] || die "--data needs a directory"; data=$2; shift 2 ;;
    --data=*) data=${1#--data=}; shift ;;
    --work) [ $# -ge 2 ] || die "--work needs a directory"; work=$2; shift 2 ;;
    --work=*) work=${1#--work=}; shift ;;
    --scratch-fs) [ $# -ge 2 ] || die "--scratch-fs needs a size"; scratch_size=$2; shift 2 ;;
    --scratch-fs=*) scratch_size=${1#--scratch-fs=}; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) tools+=("$1"); shift ;;
  esac
done
[ ${#tools[@]} -gt 0 ] || tools=(strata borg restic)
for tool in "${tools[@]}"; do
  case $tool in strata|borg|borg-zstd|borg2|restic) ;; *) die "unknown tool '$tool'" ;; esac
done
has_tool() { local t; for t in "${tools[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

if [ -n "$scratch_size" ]; then
  [ "$(id -u)" -eq 0 ] || die "--scratch-fs needs root (losetup, mount)"
  scratch_img=$(mktemp /var/tmp/strata-bench-fs.XXXXXX)
  scratch_mnt=$(mktemp -d /tmp/strata-bench-mnt.XXXXXX)
  scratch_dev=
  # Results and logs outlive the image: copied beside the data before it goes.
  scratch_keep=$(dirname "$data")/scratch-results
  cleanup_scratch() {
    cd /
    if [ -d "$scratch_mnt/work" ]; then
      rm -rf "$scratch_keep"; mkdir -p "$scratch_keep"
      cp -a "$scratch_mnt/work/"*.md "$scratch_mnt/work/"*.tsv "$scratch_mnt/work/logs" "$scratch_keep/" 2>/dev/null || true
      echo "run.sh: results and logs kept in $scratch_keep" >&2
    fi
    mountpoint -q "$scratch_mnt" && umount "$scratch_mnt"
    [ -n "$scratch_dev" ] && losetup -d "$scratch_dev"
    rm -f "$scratch_img"; rmdir "$scratch_mnt" 2>/dev/null || true
  }
  trap cleanup_scratch EXIT
  truncate -s "$scratch_size" "$scratch_img" || die "cannot make a $scratch_size image in /var/tmp"
  mkfs.ext4 -q -F "$scratch_img" >&2
  # Direct I/O on the backing file: the image's writes do not pass through the page cache twice.
  scratch_dev=$(losetup --find --show --direct-io=on "$scratch_img")
  mount "$scratch_dev" "$scratch_mnt"
  work=$scratch_mnt/work
  log "work directory on a fresh journaled ext4 of $scratch_size ($scratch_dev on $scratch_mnt)"
fi

mkdir -p "$data" "$work"
data=$(cd "$data" && pwd)
work=$(cd "$work" && pwd)
case $work/ in "$data"/*) die "--work must not be inside --data" ;; esac
run_start=$(date +%s)

# ---------------------------------------------------------------- prerequisites (idempotent)
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
need_pkgs=()
need() { # need COMMAND PACKAGE
  command -v "$1" >/dev/null 2>&1 || need_pkgs+=("$2")
}
need rsync rsync
[ -x /usr/bin/time ] || need_pkgs+=(time)
need openssl openssl   # make_datasets.sh
if has_tool borg || has_tool borg-zstd; then need borg borgbackup; fi
if has_tool borg2; then need borg2 borgbackup2; fi
if has_tool restic; then need restic restic; fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -q "${need_pkgs[@]}" >&2 ||
    { as_root apt-get update -q >&2 && as_root apt-get install -y -q "${need_pkgs[@]}" >&2; }
fi

if [ ! -d "$data/mixed" ] || [ ! -d "$data/mixed-v2" ]; then
  kit=${BENCH_KIT:-}
  if [ -z "$kit" ]; then
    if [ -x "$repo_root/../shared/bench/make_datasets.sh" ]; then kit=$repo_root/../shared/bench
    else kit=/work/shared/bench; fi
  fi
  [ -x "$kit/make_datasets.sh" ] || die "datasets missing in $data and no $kit/make_datasets.sh"
  log "building datasets in $data (once)"
  "$kit/make_datasets.sh" "$data" >&2
fi

if has_tool strata; then
  if [ -z "${STRATA_BIN:-}" ]; then
    STRATA_BIN=$repo_root/target/release/strata
    if [ ! -x "$STRATA_BIN" ]; then
      log "building strata (cargo build --release)"
      (cd "$repo_root" && cargo build --release >&2)
    fi
  fi
  [ -x "$STRATA_BIN" ] || die "STRATA_BIN=$STRATA_BIN is not an executable"
  STRATA_BIN=$(cd "$(dirname "$STRATA_BIN")" && pwd)/$(basename "$STRATA_BIN")
  if ! strata_help=$("$STRATA_BIN" create --help 2>&1) || [ -z "$strata_help" ]; then
    die "$STRATA_BIN has no working 'create' command yet (create --help failed or printed nothing)"
  fi
fi

# ---------------------------------------------------------------- environment of the tools
export BORG_PASSPHRASE=bench RESTIC_PASSWORD=bench STRATA_PASSPHRASE=bench
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_CHECK_I_KNOW_WHAT_I_AM_DOING=YES BORG_DELETE_I_KNOW_WHAT_I_AM_DOING=YES

logs=$work/logs
tsv=$work/results.tsv
src=$work/src
mkdir -p "$logs"
rm -f "$logs"/*.log "$logs"/*.diff "$logs"/*.time
printf 'tool\tstep\twall_s\tuser_s\tsys_s\tmaxrss_kib\trepo_bytes\tcache_bytes\tmb_s\trc\n' >"$tsv"
failures=0

bytes_mixed=$(du -sb "$data/mixed" | cut -f1)
bytes_v2=$(du -sb "$data/mixed-v2" | cut -f1)
files_mixed=$(find "$data/mixed" -type f | wc -l)
files_v2=$(find "$data/mixed-v2" -type f | wc -l)

# step TOOL STEP BYTES_FOR_MB_S CMD...   (runs in the current directory)
# Times CMD with GNU time, appends a TSV row; a failing CMD is recorded (rc), not fatal.
cur_repo=; cur_cache=
step() {
  local tool=$1 name=$2 bytes=$3; shift 3
  local tf=$logs/$tool-$name.time rc=0 w u s m repo_b=0 cache_b=0 mbs=-
  log "$tool $name"
  /usr/bin/time -f "%e %U %S %M" -o "$tf" "$@" >"$logs/$tool-$name.log" 2>&1 || rc=$?
  # GNU time prepends "Command exited with non-zero status N" on failure: take the last line
  read -r w u s m < <(tail -n 1 "$tf") || true
  [ -n "$cur_repo" ] && [ -e "$cur_repo" ] && repo_b=$(du -sb "$cur_repo" | cut -f1)
  [ -n "$cur_cache" ] && [ -e "$cur_cache" ] && cache_b=$(du -sb "$cur_cache" | cut -f1)
  if [ "$bytes" -gt 0 ] && [ "$rc" -eq 0 ]; then
    mbs=$(awk -v b="$bytes" -v t="$w" 'BEGIN { if (t > 0) printf "%.1f", b / 1e6 / t; else printf "-" }')
  fi
  if [ "$rc" -ne 0 ]; then
    failures=$((failures + 1))
    log "  FAILED rc=$rc, last lines of $logs/$tool-$name.log:"
    tail -n 5 "$logs/$tool-$name.log" | sed 's/^/    /' >&2
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$name" "${w:--}" "${u:--}" \
    "${s:--}" "${m:--}" "$repo_b" "$cache_b" "$mbs" "$rc" >>"$tsv"
}
na() { # na TOOL STEP: the tool lacks the step
  log "$1 $2: n/a"
  printf '%s\t%s\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\n' "$1" "$2" >>"$tsv"
}

# Compares the restore with the source: content (diff -r) and metadata (find -printf).
# Directory sizes are left out: they depend on the directory's history on disk, not on content.
meta_list() {
  (cd "$1" && find . \( -type d -printf '%P %m %U %G %T@ - %y\n' \) -o \
    -printf '%P %m %U %G %T@ %s %y\n' | LC_ALL=C sort)
}
verify() { # verify TOOL RESTORED_DIR
  local tool=$1 restored=$2 verdict content meta
  log "$tool verify"
  if [ ! -d "$restored" ]; then
    verdict="DIFFERS: $restored missing"
  else
    content=$(diff -r -q "$src" "$restored" 2>&1 | tee "$logs/$tool-verify-content.diff" | wc -l) || true
    # lines only in the source ("<") or only in the restore (">")
    diff <(meta_list "$src") <(meta_list "$restored") | grep '^[<>]' >"$logs/$tool-verify-meta.diff" || true
    meta=$(grep -c '^<' "$logs/$tool-verify-meta.diff") || true
    if [ "$content" -eq 0 ] && [ ! -s "$logs/$tool-verify-meta.diff" ]; then
      verdict=identical
    else
      verdict="DIFFERS: $content content diff lines, $meta source entries with other metadata or missing"
      verdict+=" (logs/$tool-verify-*.diff)"
      [ "$content" -eq 0 ] || verdict+="; e.g. $(head -n 1 "$logs/$tool-verify-content.diff" | cut -c1-200)"
      if [ -s "$logs/$tool-verify-meta.diff" ]; then
        verdict+="; e.g. source '$(grep -m1 '^<' "$logs/$tool-verify-meta.diff" | cut -c3-160 || true)'"
        verdict+=" restore '$(grep -m1 '^>' "$logs/$tool-verify-meta.diff" | cut -c3-160 || true)'"
      fi
    fi
  fi
  [ "$verdict" = identical ] || failures=$((failures + 1))
  log "  $verdict"
  printf '%s\t%s\n' "$tool" "$verdict" >>"$work/verify.tsv"
}

version_of() {
  case $1 in
    strata) "$STRATA_BIN" --version 2>/dev/null | head -n 1 || echo "strata (no --version)"
            git -C "$repo_root" log -1 --format='  commit %h %cs' 2>/dev/null || true ;;
    borg|borg-zstd) borg --version ;;
    borg2) borg2 --version ;;
    restic) restic version ;;
  esac
}

# ---------------------------------------------------------------- warm-up and floor
rm -f "$work/verify.tsv"
log "warm-up: tar of $data through a pipe (page cache is NOT dropped; every tool sees it warm)"
# Through `cat`: GNU tar does not read file data when its archive is /dev/null itself.
warm_start=$(date +%s.%N)
tar cf - -C "$data" mixed mixed-v2 | cat >/dev/null
warm_s=$(awk -v a="$warm_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
cur_repo=; cur_cache=
# shellcheck disable=SC2016  # positional args expand inside bash -c, as intended
step floor tar-read "$bytes_mixed" bash -c 'tar cf - -C "$1" mixed | cat >/dev/null' _ "$data"

# ---------------------------------------------------------------- the tools
for tool in "${tools[@]}"; do
  repo=$work/repo-$tool
  out=$work/restore-$tool
  cache=$work/cache-$tool
  rm -rf "$repo" "$src" "$out" "$cache"
  log "$tool: fresh copy of mixed into $src"
  cp -a "$data/mixed" "$src"
  mkdir -p "$out" "$cache"
  sync   # keep the copy's writeback out of the timed steps
  cur_repo=$repo; cur_cache=$cache
  case $tool in
    borg|borg-zstd|borg2)
      export BORG_BASE_DIR=$cache   # cache, security dir and config kept per run
      comp=lz4; [ "$tool" = borg-zstd ] && comp=zstd,3
      if [ "$tool" = borg2 ]; then
        step "$tool" init 0 borg2 -r "$repo" rcreate -e repokey-blake2-aes-ocb
        step "$tool" create1 "$bytes_mixed" borg2 -r "$repo" create --compression "$comp" a1 "$src"
        step "$tool" create2 0 borg2 -r "$repo" create --compression "$comp" a2 "$src"
        rsync -a --delete "$data/mixed-v2/" "$src/"; sync
        step "$tool" create3 0 borg2 -r "$repo" create --compression "$comp" a3 "$src"
        (cd "$out" && step "$tool" extract "$bytes_v2" borg2 -r "$repo" extract a3)
      else
        step "$tool" init 0 borg init -e repokey-blake2 "$repo"
        step "$tool" create1 "$bytes_mixed" borg create --compression "$comp" "$repo::a1" "$src"
        step "$tool" create2 0 borg create --compression "$comp" "$repo::a2" "$src"
        rsync -a --delete "$data/mixed-v2/" "$src/"; sync
        step "$tool" create3 0 borg create --compression "$comp" "$repo::a3" "$src"
        (cd "$out" && step "$tool" extract "$bytes_v2" borg extract "$repo::a3")
      fi
      verify "$tool" "$out$src"
      if [ "$tool" = borg2 ]; then
        step "$tool" check 0 borg2 -r "$repo" check --verify-data
        # shellcheck disable=SC2016  # positional args expand inside bash -c, as intended
        step "$tool" prune 0 bash -c 'borg2 -r "$1" prune --keep-last 1 && borg2 -r "$1" compact' _ "$repo"
      else
        step "$tool" check 0 borg check --verify-data "$repo"
        # shellcheck disable=SC2016  # positional args expand inside bash -c, as intended
        step "$tool" prune 0 bash -c 'borg prune --keep-last 1 "$1" && borg compact "$1"' _ "$repo"
      fi
      unset BORG_BASE_DIR ;;
    restic)
      export RESTIC_CACHE_DIR=$cache
      step "$tool" init 0 restic -r "$repo" init
      step "$tool" create1 "$bytes_mixed" restic -r "$repo" backup "$src"
      step "$tool" create2 0 restic -r "$repo" backup "$src"
      rsync -a --delete "$data/mixed-v2/" "$src/"; sync
      step "$tool" create3 0 restic -r "$repo" backup "$src"
      step "$tool" extract "$bytes_v2" restic -r "$repo" restore latest --target "$out"
      verify "$tool" "$out$src"
      step "$tool" check 0 restic -r "$repo" check --read-data
      step "$tool" prune 0 restic -r "$repo" forget --keep-last 1 --prune
      unset RESTIC_CACHE_DIR ;;
    strata)
      export XDG_CACHE_HOME=$cache
      step "$tool" init 0 "$STRATA_BIN" init --encryption repokey "$repo"
      step "$tool" create1 "$bytes_mixed" "$STRATA_BIN" create "$repo::a1" "$src"
      step "$tool" create2 0 "$STRATA_BIN" create "$repo::a2" "$src"
      rsync -a --delete "$data/mixed-v2/" "$src/"; sync
      step "$tool" create3 0 "$STRATA_BIN" create "$repo::a3" "$src"
      (cd "$out" && step "$tool" extract "$bytes_v2" "$STRATA_BIN" extract "$repo::a3")
      verify "$tool" "$out$src"
      if "$STRATA_BIN" help check >/dev/null 2>&1; then
        step "$tool" check 0 "$STRATA_BIN" check --verify-data "$repo"
      else na "$tool" check; fi
      # --grace-period 0: borg and restic reclaim at once too (strata waits an hour by default)
      if "$STRATA_BIN" help prune >/dev/null 2>&1 && "$STRATA_BIN" help compact >/dev/null 2>&1; then
        # shellcheck disable=SC2016  # positional args expand inside bash -c, as intended
        step "$tool" prune 0 bash -c '"$1" prune --keep-last 1 "$2" && "$1" compact --grace-period 0 "$2"' _ \
          "$STRATA_BIN" "$repo"
      else na "$tool" prune; fi
      unset XDG_CACHE_HOME ;;
  esac
  rm -rf "$out" "$src"   # repos are kept for inspection until the next run
done
# Failures counted inside `( cd ... && step ...)` subshells are lost: recount from the TSV.
failures=$(( $(awk -F'\t' 'NR > 1 && $10 != "0" && $10 != "n/a"' "$tsv" | wc -l) +
             $(awk -F'\t' '$2 != "identical"' "$work/verify.tsv" | wc -l) ))
run_s=$(( $(date +%s) - run_start ))

# ---------------------------------------------------------------- report
report() {
  echo "# strata benchmark results"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), host: $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, kernel $(uname -r)"
  echo "- data: \`$data\`: mixed $bytes_mixed bytes / $files_mixed files, mixed-v2 $bytes_v2 bytes / $files_v2 files"
  echo "- page cache: not dropped; warmed once by reading the data through tar (${warm_s} s for mixed + mixed-v2) before the first tool, so every tool reads from a warm cache"
  echo "- versions:"
  for tool in "${tools[@]}"; do echo "  - $tool: $(version_of "$tool" | tr '\n' ' ')"; done
  echo "- whole run: ${run_s} s"
  echo
  echo "## Restore verification (content: diff -r; metadata: path, mode, uid, gid, mtime, size, type)"
  echo
  awk -F'\t' '{ printf "- %s: %s\n", $1, $2 }' "$work/verify.tsv"
  echo
  echo "## Figures"
  echo
  echo "MB/s = dataset bytes (du -sb; mixed for create1, mixed-v2 for extract) / wall time; MB = 10^6 bytes; repo size after the step."
  echo
  echo "| tool | step | wall s | user s | sys s | MB/s | peak RSS MiB | repo MB | rc |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
  awk -F'\t' 'NR > 1 {
    rss = ($6 == "n/a" || $6 == "-") ? $6 : sprintf("%.0f", $6 / 1024)
    repo = ($7 == "n/a") ? "n/a" : ($1 == "floor" ? "-" : sprintf("%.0f", $7 / 1e6))
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $9, rss, repo, $10 }' "$tsv"
  echo
  echo "## Ratios (wall time; < 1 means strata is faster)"
  echo
  awk -F'\t' -v tools="${tools[*]}" '
    function ok(t, s) { return ((t, s) in wall) && rc[t, s] == "0" }
    function ratio(s, other) {
      if (!ok("strata", s) || !ok(other, s)) return "-"
      if (wall[other, s] + 0 == 0) return "-"
      return sprintf("%.2f", wall["strata", s] / wall[other, s])
    }
    function mratio(a, b) { return (b > 0 && a > 0) ? sprintf("%.2f", a / b) : "-" }
    NR > 1 { wall[$1, $2] = $3; rc[$1, $2] = $10
             if ($10 == "0") { if ($6 + 0 > rss[$1] + 0) rss[$1] = $6; if ($2 == "create3") repo[$1] = $7 } }
    END {
      n = split(tools, t, " "); hs = 0; hb = 0; hr = 0
      for (i = 1; i <= n; i++) { if (t[i] == "strata") hs = 1; if (t[i] == "borg") hb = 1; if (t[i] == "restic") hr = 1 }
      if (!hs || (!hb && !hr)) { print "(needs strata and borg and/or restic in the same run)"; exit }
      printf "| step | strata / borg | strata / restic |\n|---|---:|---:|\n"
      split("init create1 create2 create3 extract check prune", steps, " ")
      for (i = 1; i <= 7; i++)
        printf "| %s | %s | %s |\n", steps[i], hb ? ratio(steps[i], "borg") : "-", hr ? ratio(steps[i], "restic") : "-"
      printf "| peak RSS (max over steps) | %s | %s |\n", hb ? mratio(rss["strata"], rss["borg"]) : "-", hr ? mratio(rss["strata"], rss["restic"]) : "-"
      printf "| repo size after create3 | %s | %s |\n", hb ? mratio(repo["strata"], repo["borg"]) : "-", hr ? mratio(repo["strata"], repo["restic"]) : "-"
    }' "$tsv"
  echo
  echo "Noisy 2-core machine: compare tools within one run and read ratios, not absolute times."
  echo "Logs of every step: \`$logs\`."
}

echo "== TSV ($tsv)"
cat "$tsv"
echo
report | tee "$work/results.md"
echo
echo "(written to $work/results.md; failures: $failures)"
[ "$failures" -eq 0 ]
