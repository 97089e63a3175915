#!/usr/bin/env bash
# strata and borg over a real sshd on loopback versus their local figures,
# on the `mixed` dataset: first backup, unchanged re-backup, extract.
# Usage: bench/ssh.sh [DATA_DIR] [WORK_DIR]      (needs root for sshd)
set -euo pipefail
data=${1:-/tmp/strata-bench/data}
work=${2:-/tmp/strata-bench/ssh}
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
strata=${STRATA_BIN:-$repo_root/target/release/strata}
[ -x "$strata" ] || (cd "$repo_root" && cargo build --release --quiet)
[ -d "$data/mixed" ] || "$repo_root/../shared/bench/make_datasets.sh" "$data"
command -v borg >/dev/null || apt-get install -y -qq borgbackup
[ -x /usr/sbin/sshd ] || apt-get install -y -qq openssh-server
rm -rf "$work"; mkdir -p "$work"; install -d -m 755 /run/sshd

# a throwaway sshd on a free loopback port, key auth only
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
cat > "$work/sshd_config" <<CONF
ListenAddress 127.0.0.1
Port $port
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
/usr/sbin/sshd -f "$work/sshd_config" -E "$work/sshd.log"
trap 'kill "$(cat "$work/sshd.pid")" 2>/dev/null || true' EXIT
echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$work/host_key.pub")" > "$work/known_hosts"
rsh="ssh -i $work/client_key -o IdentitiesOnly=yes -o UserKnownHostsFile=$work/known_hosts -o StrictHostKeyChecking=yes -o BatchMode=yes -p $port"
export STRATA_RSH="$rsh" BORG_RSH="$rsh" STRATA_REMOTE_PATH="$strata"
export STRATA_PASSPHRASE=bench BORG_PASSPHRASE=bench STRATA_CACHE_DIR=$work/cache BORG_BASE_DIR=$work/borgbase
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
src=$data/mixed
size=$(du -sb "$src" | cut -f1)
t() { # t LABEL CMD...
  local label=$1; shift
  /usr/bin/time -f "%e" -o "$work/.t" "$@" >"$work/$label.log" 2>&1 || { echo "$label FAILED (see $work/$label.log)"; return 1; }
  local s; s=$(tail -1 "$work/.t")
  printf '%-28s %7.2f s %8.1f MB/s\n' "$label" "$s" "$(echo "$size / 1000000 / $s" | bc -l)"
}
echo "dataset: $src ($size bytes); sshd on 127.0.0.1:$port (OpenSSH, chacha20/aes-gcm as negotiated)"
tar cf - "$src" | cat >/dev/null   # warm the page cache once, for every step alike
"$strata" init "$work/local-repo" 2>/dev/null
t "strata create local" "$strata" create "$work/local-repo::a" "$src"
"$strata" init "ssh://root@127.0.0.1$work/ssh-repo" 2>/dev/null
t "strata create ssh" "$strata" create "ssh://root@127.0.0.1$work/ssh-repo::a" "$src"
t "strata create ssh unchanged" "$strata" create "ssh://root@127.0.0.1$work/ssh-repo::b" "$src"
# the built-in client (russh) instead of the system ssh
builtin=(env -u STRATA_RSH STRATA_SSH_KEY="$work/client_key" STRATA_KNOWN_HOSTS="$work/known_hosts")
"${builtin[@]}" "$strata" init "ssh://root@127.0.0.1:$port$work/russh-repo" 2>/dev/null
t "strata create russh" "${builtin[@]}" "$strata" create "ssh://root@127.0.0.1:$port$work/russh-repo::a" "$src"
mkdir -p "$work/x4"
t "strata extract russh" sh -c "cd $work/x4 && env -u STRATA_RSH STRATA_SSH_KEY=$work/client_key STRATA_KNOWN_HOSTS=$work/known_hosts $strata extract ssh://root@127.0.0.1:$port$work/russh-repo::a"
rm -rf "$work/x4"
mkdir -p "$work/x1" "$work/x2"
t "strata extract local" sh -c "cd $work/x1 && $strata extract $work/local-repo::a"
t "strata extract ssh" sh -c "cd $work/x2 && $strata extract ssh://root@127.0.0.1$work/ssh-repo::a"
rm -rf "$work/x1" "$work/x2"
borg init -e repokey-blake2 "$work/borg-local" 2>/dev/null
t "borg create local" borg create "$work/borg-local::a" "$src"
borg init -e repokey-blake2 --remote-path borg "ssh://root@127.0.0.1:$port$work/borg-ssh" 2>/dev/null
t "borg create ssh" borg create "ssh://root@127.0.0.1:$port$work/borg-ssh::a" "$src"
t "borg create ssh unchanged" borg create "ssh://root@127.0.0.1:$port$work/borg-ssh::b" "$src"

# the same over a link with 50 ms round-trip time (25 ms each way), through
# a delaying TCP proxy (this kernel has no sch_netem for tc netem)
lport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 "$repo_root/bench/latency_proxy.py" "$lport" "$port" 0.025 & proxy=$!
trap 'kill "$(cat "$work/sshd.pid")" $proxy 2>/dev/null || true' EXIT
for _ in $(seq 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1',$lport))" 2>/dev/null && break; done
echo "[127.0.0.1]:$lport $(cut -d' ' -f1,2 "$work/host_key.pub")" >> "$work/known_hosts"
slow="${rsh/-p $port/-p $lport}"
export STRATA_RSH="$slow" BORG_RSH="$slow"
"$strata" init "ssh://root@127.0.0.1$work/ssh-slow" 2>/dev/null
t "strata create ssh +50ms" "$strata" create "ssh://root@127.0.0.1$work/ssh-slow::a" "$src"
t "strata create ssh +50ms unch." "$strata" create "ssh://root@127.0.0.1$work/ssh-slow::b" "$src"
mkdir -p "$work/x3"
t "strata extract ssh +50ms" sh -c "cd $work/x3 && $strata extract ssh://root@127.0.0.1$work/ssh-slow::a"
rm -rf "$work/x3"
# the built-in client over the same delaying proxy
"${builtin[@]}" "$strata" init "ssh://root@127.0.0.1:$lport$work/russh-slow" 2>/dev/null
t "strata create russh +50ms" "${builtin[@]}" "$strata" create "ssh://root@127.0.0.1:$lport$work/russh-slow::a" "$src"
borg init -e repokey-blake2 --remote-path borg "ssh://root@127.0.0.1:$lport$work/borg-slow" 2>/dev/null
t "borg create ssh +50ms" borg create "ssh://root@127.0.0.1:$lport$work/borg-slow::a" "$src"
