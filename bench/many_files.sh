#!/usr/bin/env bash
# Many small files: strata vs restic vs borg on a tree of 1,000,000 small files
# (issue 15: "1M-file tree: unchanged re-backup in seconds, not minutes").
# See bench/README.md, "Many small files".
#
# Usage: bench/many_files.sh [--base DIR] [--dirs N] [--files N] [--delete-tree] [--keep-repos] [TOOL...]
#   TOOL: strata restic borg (default: all three, in that order)
#   --base DIR     tree, repos, caches, logs, results (default /tmp/strata-bench/many)
#   --dirs N       directories in the tree (default 1000)
#   --files N      files per directory (default 1000)
#   --delete-tree  delete the source tree at the end (it is kept for reruns by default)
#   --keep-repos   keep the repositories and caches (deleted at the end by default)
# Environment: STRATA_BIN (default target/release/strata, built if missing), as in run.sh.
# Rows of tools not run this time stay in BASE/results.tsv from earlier runs, so
# `many_files.sh restic borg` then `many_files.sh strata` gives one report.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
base=/tmp/strata-bench/many
ndirs=1000
nfiles=1000
delete_tree=0
keep_repos=0
tools=()

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
die() { echo "many_files.sh: $*" >&2; exit 2; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

while [ $# -gt 0 ]; do
  case $1 in
    --base) [ $# -ge 2 ] || die "--base needs a directory"; base=$2; shift 2 ;;
    --dirs) [ $# -ge 2 ] || die "--dirs needs a number"; ndirs=$2; shift 2 ;;
    --files) [ $# -ge 2 ] || die "--files needs a number"; nfiles=$2; shift 2 ;;
    --delete-tree) delete_tree=1; shift ;;
    --keep-repos) keep_repos=1; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) tools+=("$1"); shift ;;
  esac
done
[ ${#tools[@]} -gt 0 ] || tools=(strata restic borg)
for tool in "${tools[@]}"; do
  case $tool in strata|borg|restic) ;; *) die "unknown tool '$tool'" ;; esac
done
case $ndirs$nfiles in *[!0-9]*) die "--dirs and --files take numbers" ;; esac
has_tool() { local t; for t in "${tools[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }

mkdir -p "$base"
base=$(cd "$base" && pwd)
tree=$base/tree
logs=$base/logs
tsv=$base/results.tsv
mkdir -p "$logs"
# The tree is changed and restored by every tool's run: one run at a time.
exec 9>"$base/.lock"
flock -n 9 || die "another many_files.sh run holds $base/.lock"
run_start=$(date +%s)

# ---------------------------------------------------------------- prerequisites
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
need_pkgs=()
[ -x /usr/bin/time ] || need_pkgs+=(time)
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)
if has_tool borg; then command -v borg >/dev/null 2>&1 || need_pkgs+=(borgbackup); fi
if has_tool restic; then command -v restic >/dev/null 2>&1 || need_pkgs+=(restic); fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -q "${need_pkgs[@]}" >&2 ||
    { as_root apt-get update -q >&2 && as_root apt-get install -y -q "${need_pkgs[@]}" >&2; }
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
fi

# ---------------------------------------------------------------- the tree (once)
# gen.py make|change|restore TREE DIRS FILES
# File i (directory d, number f) has a size from a fixed hash of i: 0-4 KiB, most
# under 1 KiB (mean ~1 KiB), and every 9973rd file 1-2 MiB. Content: its own path,
# then bytes from a seeded random pool, so files differ and barely compress.
# `change` appends a line to 500 files and touches 500 others (one of each in every
# other directory); `restore` writes the original content of the appended ones back.
gen_py=$(cat <<'EOF'
import os, random, sys
mode, tree, ndirs, nfiles = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
pool = random.Random(15).randbytes(1 << 20)
def size_of(i):
    h = (i * 2654435761 + 0x9e3779b9) & 0xffffffff
    if i % 9973 == 4321:
        return (1 << 20) + h % (1 << 20)
    return ((h % 4097) * ((h >> 12) % 4097)) // 4096
def content(d, f):
    i = d * nfiles + f
    n = size_of(i)
    head = b"d%04d/f%04d\n" % (d, f)
    if n > (1 << 16):
        body = random.Random(i).randbytes(n)
    else:
        off = (i * 7919) % (len(pool) - n - 1)
        body = pool[off:off + n]
    return (head + body)[:n]
def path(d, f):
    return os.path.join(tree, "d%04d" % d, "f%04d" % f)
def write(p, data):
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
# the changed files: in every other directory, one file appended and one touched
picks = [(d, (d * 37) % nfiles, (d * 37 + 500) % nfiles) for d in range(0, ndirs, 2)]
if mode == "make":
    for d in range(ndirs):
        os.makedirs(os.path.join(tree, "d%04d" % d), exist_ok=True)
        for f in range(nfiles):
            write(path(d, f), content(d, f))
elif mode == "change":
    for d, a, t in picks:
        with open(path(d, a), "ab") as fh:
            fh.write(b"changed\n")
        os.utime(path(d, t))
elif mode == "restore":
    for d, a, t in picks:
        write(path(d, a), content(d, a))
print(len(picks) * 2 if mode != "make" else ndirs * nfiles)
EOF
)
gen() { python3 -c "$gen_py" "$1" "$tree" "$ndirs" "$nfiles"; }
stamp=$base/tree.done   # outside the tree: not backed up
want="dirs=$ndirs files=$nfiles v1"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  log "making the tree in $tree ($ndirs x $nfiles files, once; a few minutes)"
  rm -rf "$tree" "$stamp"
  mkdir -p "$tree"
  gen make >/dev/null
  sync
  echo "$want" >"$stamp"
fi
tree_files=$(( ndirs * nfiles ))

# ---------------------------------------------------------------- environment of the tools
export BORG_PASSPHRASE=bench RESTIC_PASSWORD=bench STRATA_PASSPHRASE=bench
export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
export BORG_DELETE_I_KNOW_WHAT_I_AM_DOING=YES

[ -f "$tsv" ] || printf 'tool\tstep\twall_s\tuser_s\tsys_s\tmaxrss_kib\trepo_bytes\tcache_bytes\trc\tdate\n' >"$tsv"
# this run's tools replace their earlier rows
for tool in floor "${tools[@]}"; do
  awk -F'\t' -v t="$tool" '$1 != t' "$tsv" >"$tsv.tmp" && mv "$tsv.tmp" "$tsv"
done

# step TOOL STEP CMD...: times CMD with GNU time, appends a TSV row; failure is recorded, not fatal
cur_repo=; cur_cache=
step() {
  local tool=$1 name=$2; shift 2
  local tf=$logs/$tool-$name.time rc=0 w u s m repo_b=0 cache_b=0
  log "$tool $name"
  /usr/bin/time -f "%e %U %S %M" -o "$tf" "$@" >"$logs/$tool-$name.log" 2>&1 || rc=$?
  read -r w u s m < <(tail -n 1 "$tf") || true
  [ -n "$cur_repo" ] && [ -e "$cur_repo" ] && repo_b=$(du -sb "$cur_repo" | cut -f1)
  [ -n "$cur_cache" ] && [ -e "$cur_cache" ] && cache_b=$(du -sb "$cur_cache" | cut -f1)
  if [ "$rc" -ne 0 ]; then
    log "  FAILED rc=$rc, last lines of $logs/$tool-$name.log:"
    tail -n 5 "$logs/$tool-$name.log" | sed 's/^/    /' >&2
  fi
  log "  ${w:--} s wall, ${u:--} user, ${s:--} sys, ${m:--} KiB"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$name" "${w:--}" "${u:--}" \
    "${s:--}" "${m:--}" "$repo_b" "$cache_b" "$rc" "$(date -u +%FT%TZ)" >>"$tsv"
}

# ---------------------------------------------------------------- warm-up and floor
# Page cache is not dropped: one pass of `find` that stats every entry warms dentries
# and inodes for every tool (`-printf ''` alone would not stat: it uses d_type).
log "warm-up: find over the tree"
find "$tree" -printf '%s\n' >/dev/null
# the floor of an unchanged re-backup: one stat of every entry, nothing else
step floor stat-all find "$tree" -printf '%i %s %T@ %C@\n'

# ---------------------------------------------------------------- the tools
for tool in "${tools[@]}"; do
  repo=$base/repo-$tool
  cache=$base/cache-$tool
  rm -rf "$repo" "$cache"
  mkdir -p "$cache"
  cur_repo=$repo; cur_cache=$cache
  case $tool in
    strata)
      export XDG_CACHE_HOME=$cache
      step strata init "$STRATA_BIN" init --encryption repokey "$repo"
      step strata create1 "$STRATA_BIN" create "$repo::a1" "$tree"
      step strata create2 "$STRATA_BIN" create "$repo::a2" "$tree"
      log "changing $(gen change) files"
      step strata create3 "$STRATA_BIN" create "$repo::a3" "$tree"
      unset XDG_CACHE_HOME ;;
    restic)
      export RESTIC_CACHE_DIR=$cache
      step restic init restic -r "$repo" init
      step restic create1 restic -r "$repo" backup "$tree"
      step restic create2 restic -r "$repo" backup "$tree"
      log "changing $(gen change) files"
      step restic create3 restic -r "$repo" backup "$tree"
      unset RESTIC_CACHE_DIR ;;
    borg)
      export BORG_BASE_DIR=$cache
      step borg init borg init -e repokey-blake2 "$repo"
      step borg create1 borg create --compression lz4 "$repo::a1" "$tree"
      step borg create2 borg create --compression lz4 "$repo::a2" "$tree"
      log "changing $(gen change) files"
      step borg create3 borg create --compression lz4 "$repo::a3" "$tree"
      unset BORG_BASE_DIR ;;
  esac
  log "restoring $(gen restore) files of the tree"
  if [ "$keep_repos" -eq 0 ]; then rm -rf "$repo" "$cache"; fi
done
[ "$delete_tree" -eq 0 ] || { log "deleting $tree"; rm -rf "$tree" "$stamp"; }
run_s=$(( $(date +%s) - run_start ))

# ---------------------------------------------------------------- report
version_of() {
  case $1 in
    strata) "$STRATA_BIN" --version 2>/dev/null | head -n 1 || echo "strata"
            git -C "$repo_root" log -1 --format='  commit %h %cs' 2>/dev/null || true ;;
    borg) borg --version ;;
    restic) restic version ;;
  esac
}
report() {
  echo "# Many small files: strata vs restic vs borg"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), host: $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, kernel $(uname -r)"
  echo "- tree: \`$tree\`: $ndirs directories x $nfiles files = $tree_files files, $(du -sb "$tree" 2>/dev/null | cut -f1 || echo '?') bytes (du -sb)"
  echo "- create3: after appending a line to 500 files and touching 500 others"
  echo "- versions (this run):"
  for tool in "${tools[@]}"; do echo "  - $tool: $(version_of "$tool" | tr '\n' ' ')"; done
  echo "- this run: ${run_s} s"
  echo
  echo "| tool | step | wall s | user s | sys s | peak RSS MiB | repo MB | cache MB | rc |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
  awk -F'\t' 'NR > 1 {
    rss = ($6 == "-") ? "-" : sprintf("%.0f", $6 / 1024)
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, rss,
      ($1 == "floor") ? "-" : sprintf("%.1f", $7 / 1e6), ($1 == "floor") ? "-" : sprintf("%.1f", $8 / 1e6), $9 }' "$tsv"
  echo
  echo "Ratios: strata / other, wall time and user+sys CPU (< 1: strata is faster)."
  echo
  awk -F'\t' '
    NR > 1 && $9 == "0" { wall[$1, $2] = $3; cpu[$1, $2] = $4 + $5; have[$1] = 1 }
    function r(a, b) { return (b + 0 > 0) ? sprintf("%.2f", a / b) : "-" }
    END {
      printf "| step | strata/restic wall | strata/restic CPU | strata/borg wall | strata/borg CPU |\n|---|---:|---:|---:|---:|\n"
      split("init create1 create2 create3", steps, " ")
      for (i = 1; i <= 4; i++) {
        s = steps[i]; line = "| " s
        split("restic borg", others, " ")
        for (j = 1; j <= 2; j++) {
          o = others[j]
          if (("strata", s) in wall && (o, s) in wall)
            line = line " | " r(wall["strata", s], wall[o, s]) " | " r(cpu["strata", s], cpu[o, s])
          else line = line " | - | -"
        }
        print line " |"
      }
    }' "$tsv"
  echo
  echo "Noisy shared 2-core machine: read ratios and CPU seconds more than wall times."
  echo "Logs: \`$logs\`."
}
echo "== TSV ($tsv)"
cat "$tsv"
echo
report | tee "$base/results.md"
echo
echo "(written to $base/results.md)"
! awk -F'\t' 'NR > 1 && $9 != "0" { bad = 1 } END { exit !bad }' "$tsv"
