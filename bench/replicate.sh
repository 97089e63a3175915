#!/usr/bin/env bash
# strata replicate versus the borg-in-borg script, to a "Pi" in a network
# namespace behind a veth pair (real sshd there), on the same data:
#   1. a host repository of the `mixed` dataset (encrypted, stored
#      uncompressed so the repository is ~2 GiB) is replicated the first time;
#   2. the host backs up `mixed-v2` (a day of change, ~1%), and it is
#      replicated again.
# Bytes on the wire are the veth's tx counter (everything sent towards the
# Pi, SSH and TCP overhead included). Peak RSS of the Pi's `strata serve`
# is measured with /usr/bin/time around it.
# Usage: bench/replicate.sh [DATA_DIR] [WORK_DIR]      (needs root)
set -euo pipefail
data=${1:-/tmp/strata-bench/data}
work=${2:-/tmp/strata-bench/replicate}
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
strata=${STRATA_BIN:-$repo_root/target/release/strata}
[ -x "$strata" ] || (cd "$repo_root" && cargo build --release --quiet)
[ -d "$data/mixed-v2" ] || "$repo_root/../shared/bench/make_datasets.sh" "$data"
command -v borg >/dev/null || apt-get install -y -qq borgbackup
[ -x /usr/sbin/sshd ] || apt-get install -y -qq openssh-server
[ -x /usr/bin/time ] || apt-get install -y -qq time

ns=strata-bench-pi-$$
dev=vbr$$
rm -rf "$work"; mkdir -p "$work/pi"; install -d -m 755 /run/sshd
cleanup() {
  [ -f "$work/sshd.pid" ] && kill "$(cat "$work/sshd.pid")" 2>/dev/null || true
  ip link del "$dev" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
ip link add "$dev" type veth peer name "${dev}p"
ip link set "${dev}p" netns "$ns"
ip addr add 10.231.7.1/24 dev "$dev"; ip link set "$dev" up
ip netns exec "$ns" ip addr add 10.231.7.2/24 dev "${dev}p"
ip netns exec "$ns" ip link set "${dev}p" up
ip netns exec "$ns" ip link set lo up
pi=10.231.7.2

ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
cat > "$work/sshd_config" <<CONF
ListenAddress $pi
Port 22
HostKey $work/host_key
PidFile $work/sshd.pid
AuthorizedKeysFile $work/authorized_keys
# bash sources ~/.bashrc for sshd sessions unless SHLVL is set: keep it out
SetEnv SHLVL=1
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitUserRC no
CONF
ip netns exec "$ns" /usr/sbin/sshd -f "$work/sshd_config" -E "$work/sshd.log"
echo "$pi $(cut -d' ' -f1,2 "$work/host_key.pub")" > "$work/known_hosts"
export STRATA_SSH_KEY=$work/client_key STRATA_KNOWN_HOSTS=$work/known_hosts
export BORG_RSH="ssh -i $work/client_key -o IdentitiesOnly=yes -o UserKnownHostsFile=$work/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes"
export STRATA_PASSPHRASE=bench BORG_PASSPHRASE=bench STRATA_CACHE_DIR=$work/cache BORG_BASE_DIR=$work/borgbase
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
# the Pi side runs under /usr/bin/time for its peak RSS
export STRATA_REMOTE_PATH="/usr/bin/time -a -f serve-rss-kib=%M -o $work/serve-rss $strata"

tx() { cat "/sys/class/net/$dev/statistics/tx_bytes"; }
rx() { cat "/sys/class/net/$dev/statistics/rx_bytes"; }
files_of() { (cd "$1" && find . -type f ! -path './locks/*' ! -name 'lock*' -printf '%p %s\n' | sort); }
new_bytes() { # new_bytes BEFORE AFTER: bytes of files in AFTER not in BEFORE
  join -v 2 <(cut -d' ' -f1 "$1") <(sort "$2") | awk '{s+=$2} END {print s+0}'
}
results=$work/results.md
row() { # row LABEL SECONDS WIRE_BYTES NEW_BYTES
  printf '| %s | %.2f | %.1f | %.1f | %.3f |\n' "$1" "$2" "$(echo "$3/1000000" | bc -l)" \
    "$(echo "$4/1000000" | bc -l)" "$(echo "$3/$4" | bc -l)" | tee -a "$results"
}
timed() { # timed LOG CMD... ; sets secs
  local log=$1 s; shift; s=$(date +%s.%N)
  "$@" >"$work/$log.log" 2>&1 || { echo "FAILED: $* (see $work/$log.log)"; tail -3 "$work/$log.log"; exit 1; }
  secs=$(echo "$(date +%s.%N) - $s" | bc -l)
}

echo "| step | seconds | sent on the wire (MB) | new repository files (MB) | wire / new |" | tee "$results"
echo "|---|---|---|---|---|" | tee -a "$results"

# the hosts' repositories on the central node
"$strata" init -e repokey "$work/central/host" >/dev/null
"$strata" create -C none "$work/central/host::a" "$data/mixed"
mkdir -p "$work/central-borg"; borg init -e repokey-blake2 "$work/central-borg/host" >/dev/null 2>&1
borg create -C none "$work/central-borg/host::a" "$data/mixed"
"$strata" init -e none "ssh://root@$pi$work/pi/strata" >/dev/null
borg init -e none "ssh://root@$pi$work/pi/borg" >/dev/null 2>&1

: > "$work/empty"
files_of "$work/central/host" > "$work/strata-1.files"
files_of "$work/central-borg/host" > "$work/borg-1.files"
b=$(tx); timed s1 "$strata" replicate --stats --to "ssh://root@$pi$work/pi/strata" "$work/central/host"
row "strata replicate, first" "$secs" $(($(tx) - b)) "$(new_bytes "$work/empty" "$work/strata-1.files")"
b=$(tx); timed b1 borg create "ssh://root@$pi$work/pi/borg::host-1" "$work/central-borg/host"
row "borg-in-borg, first" "$secs" $(($(tx) - b)) "$(new_bytes "$work/empty" "$work/borg-1.files")"

# a day of change on the host
"$strata" create -C none "$work/central/host::b" "$data/mixed-v2"
borg create -C none "$work/central-borg/host::b" "$data/mixed-v2"
files_of "$work/central/host" > "$work/strata-2.files"
files_of "$work/central-borg/host" > "$work/borg-2.files"
b=$(tx); timed s2 "$strata" replicate --stats --to "ssh://root@$pi$work/pi/strata" "$work/central/host"
row "strata replicate, after ~1% change" "$secs" $(($(tx) - b)) "$(new_bytes "$work/strata-1.files" "$work/strata-2.files")"
b=$(tx); timed b2 borg create "ssh://root@$pi$work/pi/borg::host-2" "$work/central-borg/host"
row "borg-in-borg, after ~1% change" "$secs" $(($(tx) - b)) "$(new_bytes "$work/borg-1.files" "$work/borg-2.files")"

b=$(tx); timed s3 "$strata" replicate --verify --to "ssh://root@$pi$work/pi/strata" "$work/central/host"
printf '| strata replicate --verify, nothing new | %.2f | %.1f | 0 | - |\n' "$secs" "$(echo "($(tx) - $b)/1000000" | bc -l)" | tee -a "$results"

# restore one small file of the host straight from the Pi's newest replica
small=$(cd "$data/mixed-v2" && find . -type f -size -20k | LC_ALL=C sort | awk 'NR==1' | sed 's|^\./||')
mkdir -p "$work/one-file" && cd "$work/one-file"
b=$(rx); s=$(date +%s.%N)
"$strata" extract --replica "ssh://root@$pi$work/pi/strata" "host::b" "${data#/}/mixed-v2/$small" >"$work/one-file.log" 2>&1
secs=$(echo "$(date +%s.%N) - $s" | bc -l)
got=$(($(rx) - b)); cd "$work"
cmp "$data/mixed-v2/$small" "$work/one-file/${data#/}/mixed-v2/$small"
printf '| one small file from the replica (extract --replica) | %.2f | received %.1f | - | - |\n' "$secs" "$(echo "$got/1000000" | bc -l)" | tee -a "$results"

echo
echo "repository sizes: strata $(du -sb "$work/central/host" | cut -f1) B, borg $(du -sb "$work/central-borg/host" | cut -f1) B"
echo "Pi repositories: strata $(du -sb "$work/pi/strata" | cut -f1) B, borg $(du -sb "$work/pi/borg" | cut -f1) B"
echo "peak RSS of the Pi's strata serve (KiB), per run: $(grep -o '[0-9]*$' "$work/serve-rss" | tr '\n' ' ')"
# the Pi's own maintenance of its replica repository: peak RSS
for step in "check" "check --verify-data" "prune --keep-last 2" "compact"; do
  /usr/bin/time -f "Pi: strata $step: peak RSS %M KiB, %e s" "$strata" $step "$work/pi/strata" >/dev/null 2>"$work/pi-step.log" || true
  tail -1 "$work/pi-step.log"
done
echo "results: $results"
