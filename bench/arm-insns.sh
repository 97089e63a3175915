#!/usr/bin/env bash
# Instructions per MiB of the off-site node's side of replication, counted
# under qemu-user for x86_64, aarch64 and armv7 builds with the same TCG
# plugin (bench/qemu-insn-plugin), so the ratio aarch64/x86_64 is not a
# timing on a shared VM (issue 15: keep aarch64 within 1.5x of x86_64).
#
# What is counted (bench/RESULTS-arm-2026-12-07.md says why):
#   serve  the Pi's `strata serve --append-only` receiving one first
#          replication of a host repository (an encrypted repository of
#          random and compressible data, --mib MiB of source data): every
#          guest instruction of that process, user space only (qemu-user
#          runs syscalls on the host, so the kernel's share is not counted).
#          The central side (`strata replicate`) runs natively on x86_64
#          and talks to it through a forced-command stand-in for ssh.
#   check  `strata check --verify-data` of the Pi's repository afterwards,
#          also under qemu, the other job the Pi runs over every byte.
# MiB = bytes of source repository files read by the replication / 2^20.
#
# Usage: bench/arm-insns.sh [--rebuild] [--mib N] [--top N] [--archs LIST]
#                           [--work DIR] [--keep]
#   --rebuild   rebuild the three release binaries even if they exist
#   --mib N     source data, half random and half log-like text (default 48)
#   --top N     also print the N functions of each serve and check run with
#               the most instructions
#   --archs     comma-separated rows to run, from x86_64,x86_64-sse41,x86_64-sse2,
#               aarch64,aarch64-max,armv7 (default: all; x86_64 is the
#               reference of the ratios)
#   --work DIR  scratch directory (default /tmp/strata-arm-insns), removed
#               at the end unless --keep
# The table goes to standard output (and the per-function lists with --top).
# Needs root for apt-get only when qemu-user, the cross compilers or the
# rustup targets are missing. Takes about a minute when the binaries
# exist (a first release build: 15-25 minutes per target on 2 shared
# cores). ARM_INSNS_X86_TUNABLES= (empty) lets x86 glibc use `rep movsb`
# (see the results file for why it is off by default).
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rebuild=0 mib=48 top=0 keep=0 work=/tmp/strata-arm-insns
archs=x86_64,x86_64-sse41,x86_64-sse2,aarch64,aarch64-max,armv7
while [ $# -gt 0 ]; do
  case $1 in
    --rebuild) rebuild=1 ;;
    --mib) mib=$2; shift ;;
    --top) top=$2; shift ;;
    --archs) archs=$2; shift ;;
    --work) work=$2; shift ;;
    --keep) keep=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

# --- tools ----------------------------------------------------------------
# Debian's qemu-user-static is built without plugin support; qemu-user
# (dynamic) has it. Both are 7.2 on bookworm.
need=()
qemu-aarch64 --help 2>/dev/null | grep -q -- '^-plugin' || need+=(qemu-user)
command -v gcc >/dev/null || need+=(gcc libc6-dev)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf libc6-dev-armhf-cross)
command -v python3 >/dev/null || need+=(python3)
[ ${#need[@]} -eq 0 ] || apt-get install -y -qq "${need[@]}"

# --- binaries (the worktree's own target directory) -------------------------
declare -A triple=([x86_64]=x86_64-unknown-linux-gnu [aarch64]=aarch64-unknown-linux-gnu
                   [armv7]=armv7-unknown-linux-gnueabihf)
bin_of() { # bin_of ARCH
  if [ "$1" = x86_64 ]; then echo "$repo_root/target/release/strata"
  else echo "$repo_root/target/${triple[$1]}/release/strata"; fi
}
wanted_arch() { [[ ",$archs," == *",$1"[,-]* ]]; }
for a in x86_64 aarch64 armv7; do
  # x86_64 is always built: it also plays the central node
  [ "$a" = x86_64 ] || wanted_arch "$a" || continue
  if [ "$rebuild" = 1 ] || [ ! -x "$(bin_of "$a")" ]; then
    echo "building $a (cargo build --locked --release)" >&2
    if [ "$a" = x86_64 ]; then (cd "$repo_root" && cargo build --locked --release --quiet)
    else
      rustup target list --installed | grep -qx "${triple[$a]}" || rustup target add "${triple[$a]}"
      (cd "$repo_root" && cargo build --locked --release --quiet --target "${triple[$a]}")
    fi
  fi
done
host=$(bin_of x86_64)

rm -rf "$work"; mkdir -p "$work"
[ "$keep" = 1 ] || trap 'rm -rf "$work"' EXIT
plugin=$work/insncount.so
gcc -O2 -Wall -Wextra -shared -fPIC -o "$plugin" "$repo_root/bench/qemu-insn-plugin/insncount.c" -lpthread

# --- input: an encrypted host repository (deterministic data) ---------------
export STRATA_PASSPHRASE=bench STRATA_CACHE_DIR=$work/cache
mkdir -p "$work/data"
python3 - "$work/data" "$mib" <<'PY'
import random, sys, os
out, mib = sys.argv[1], int(sys.argv[2])
rnd = random.Random(15)
half = mib * (1 << 20) // 2
# random: 8 files; text: log-like lines from a small vocabulary (zstd ~5x)
for i in range(8):
    with open(os.path.join(out, f"random-{i}.bin"), "wb") as f:
        f.write(rnd.randbytes(half // 8))
words = ["GET", "POST", "/api/v1/items", "/static/app.js", "200", "304", "404",
         "user", "session", "backup", "ok", "slow", "retry", "knode01", "pi-home"]
for i in range(8):
    with open(os.path.join(out, f"log-{i}.txt"), "w") as f:
        n = 0
        while n < half // 8:
            line = "2026-12-%02d %02d:%02d:%02d %s\n" % (
                rnd.randint(1, 31), rnd.randint(0, 23), rnd.randint(0, 59), rnd.randint(0, 59),
                " ".join(rnd.choice(words) for _ in range(rnd.randint(4, 12))) + " id=%d" % rnd.getrandbits(32))
            f.write(line); n += len(line)
PY
"$host" init -e repokey "$work/host-repo" >/dev/null 2>&1
"$host" create "$work/host-repo::day1" "$work/data" >/dev/null
rm -rf "$work/data"
# every run replicates into a copy of one empty target: same chunker seed,
# so every architecture receives the same chunks
"$host" init -e none "$work/pi-template" >/dev/null 2>&1

# --- runs ---------------------------------------------------------------------
# label arch qemu-cpu note
rows=(
  "x86_64 x86_64 max AVX2 (TCG has no AVX-512)"
  "x86_64-sse41 x86_64 Nehalem SSE4.1: 128-bit, as NEON"
  "x86_64-sse2 x86_64 qemu64 SSE2 baseline"
  "aarch64 aarch64 cortex-a72 Pi 4: NEON, no AES/SHA"
  "aarch64-max aarch64 max NEON+AES+SHA (+SVE)"
  "armv7 armv7 cortex-a15 32-bit OS: ARMv7 NEON"
)
qemu_of() { case $1 in x86_64) echo qemu-x86_64 ;; aarch64) echo qemu-aarch64 ;; armv7) echo qemu-arm ;; esac; }
sysroot_of() { case $1 in x86_64) echo / ;; aarch64) echo /usr/aarch64-linux-gnu ;; armv7) echo /usr/arm-linux-gnueabihf ;; esac; }
# x86 glibc copies and fills large blocks with `rep movsb`/`rep stosb`
# (ERMS), which QEMU executes, and the plugin counts, one iteration at a
# time: one "instruction" per byte. Without ERMS glibc uses its AVX2/SSE2
# loops, comparable to the NEON loops of aarch64's glibc.
# ARM_INSNS_X86_TUNABLES= (empty) counts glibc's default choice instead.
tunables_of() { if [ "$1" = x86_64 ]; then echo "${ARM_INSNS_X86_TUNABLES-glibc.cpu.hwcaps=-ERMS,-FSRM}"; fi; }
sum() { awk -v k="$1" '$1 == k { s += $2 } END { printf "%d", s }' "$2"; }
# profile COUNTFILE N: the N functions with the most instructions. The
# plugin names functions of the strata binary that QEMU knows; the rest
# (shared libraries, assembly without a symbol type, e.g. BLAKE3's x86
# assembly) it gives as file offsets, resolved here with nm.
profile() {
  python3 - "$1" "$2" <<'PY' | c++filt
import bisect, collections, subprocess, sys
path, n = sys.argv[1], int(sys.argv[2])
total, by = 0, collections.Counter()
tables = {}
def resolve(f, off):
    if f not in tables:
        segs, syms = [], []
        try:
            for l in subprocess.run(["readelf", "-lW", f], capture_output=True, text=True).stdout.splitlines():
                w = l.split()
                if w[:1] == ["LOAD"]:
                    segs.append((int(w[1], 16), int(w[2], 16), int(w[4], 16)))
            for flag in ([], ["-D"]):
                out = subprocess.run(["nm", "-n", "--defined-only", *flag, f], capture_output=True, text=True).stdout
                for l in out.splitlines():
                    w = l.split()
                    if len(w) == 3 and w[1] in "tTwWiI":
                        syms.append((int(w[0], 16), w[2]))
        except OSError:
            pass
        syms.sort()
        tables[f] = (segs, [a for a, _ in syms], [s for _, s in syms])
    segs, addrs, names = tables[f]
    va = next((off - o + v for o, v, sz in segs if o <= off < o + sz), off)
    i = bisect.bisect_right(addrs, va) - 1
    lib = f.rsplit("/", 1)[-1]
    return f"{names[i]} [{lib}]" if i >= 0 else f"? [{lib}+{off:#x}]"
for line in open(path):
    w = line.split()
    if w[0] == "insns":
        total += int(w[1])
    elif w[0] == "sym" and not w[3].startswith("(no"):
        by[w[3]] += int(w[1])
    elif w[0] == "unsym":
        by[resolve(w[2], int(w[3], 16))] += int(w[1])
for name, c in by.most_common(n):
    print(f"{c:>14,} {100 * c / total:5.1f}%  {name}")
PY
}

results=$work/results.txt
: > "$results"
for row in "${rows[@]}"; do
  read -r label arch cpu note <<<"$row"
  [[ ",$archs," == *",$label,"* ]] || continue
  bin=$(bin_of "$arch")
  qemu="env GLIBC_TUNABLES=$(tunables_of "$arch") $(qemu_of "$arch") -L $(sysroot_of "$arch") -cpu $cpu"
  count=$work/serve-$label.count
  target=$work/pi-$label
  cp -a "$work/pi-template" "$target"
  # the Pi's authorized_keys forced command, with qemu and the counter in front
  cat > "$work/rsh-$label" <<SH
#!/bin/sh
exec $qemu -plugin $plugin,out=$count,top=$top $bin serve --append-only --restrict-to-path $work
SH
  chmod +x "$work/rsh-$label"
  STRATA_CACHE_DIR=$work/cache-$label STRATA_RSH=$work/rsh-$label STRATA_SSH_CONNECTIONS=1 \
    "$host" replicate --json --to "pi:$target" "$work/host-repo" > "$work/replicate-$label.json"
  read -r read_bytes sent_bytes < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))["replicas"][0]
assert r["ok"], r
print(r["read_bytes"], r["sent_bytes"])' "$work/replicate-$label.json")
  check=$work/check-$label.count
  STRATA_CACHE_DIR=$work/cache-$label-pi $qemu -plugin "$plugin,out=$check,top=$top" "$bin" check --verify-data "$target" >/dev/null 2>&1
  echo "$label $arch $cpu $(sum insns "$count") $(sum insns "$check") $read_bytes $sent_bytes $(sum rep_iters "$count") $(sum rep_iters "$check") $note" >> "$results"
  if [ "$top" -gt 0 ]; then
    echo "== $label ($cpu): serve, top $top functions (% of the process's instructions)"
    profile "$count" "$top"
    echo "== $label ($cpu): check --verify-data, top $top functions"
    profile "$check" "$top"
  fi
  rm -rf "$target" "$work/cache-$label" "$work/cache-$label-pi"
done

# --- table --------------------------------------------------------------------
python3 - "$results" <<'PY'
import sys
rows = [l.split(None, 9) for l in open(sys.argv[1]) if l.strip()]
ref = {}
for r in rows:
    if r[0] == "x86_64":
        mib = int(r[5]) / 2**20
        ref = {"serve": int(r[3]) / mib, "check": int(r[4]) / mib}
print(f"MiB replicated: {int(rows[0][5]) / 2**20:.1f} (source repository files read); "
      f"sent to serve: {int(rows[0][6]) / 2**20:.1f} MiB")
print()
print("| arch | qemu cpu | what | serve insns | serve insns/MiB | ratio | check insns/MiB | ratio | x86 rep iters (serve/check) |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|")
for label, arch, cpu, s, c, rb, sb, rs, rc, note in rows:
    mib = int(rb) / 2**20
    spm, cpm = int(s) / mib, int(c) / mib
    ratio = lambda v, k: f"{v / ref[k]:.2f}" if ref else "-"
    reps = f"{int(rs):,} / {int(rc):,}" if arch == "x86_64" else "-"
    print(f"| {label} | {cpu} | {note.strip()} | {int(s):,} | {spm:,.0f} | {ratio(spm, 'serve')} "
          f"| {cpm:,.0f} | {ratio(cpm, 'check')} | {reps} |")
PY
