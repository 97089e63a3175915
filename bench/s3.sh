#!/usr/bin/env bash
# strata into a Garage cluster (three nodes on this machine, replication
# factor 3) versus into a local directory, and restic into the same cluster,
# on the `mixed` dataset: first backup, unchanged re-backup, extract,
# check --verify-data. Prints times and the ratios the issue asks for.
# Usage: bench/s3.sh [DATA_DIR] [WORK_DIR]
set -euo pipefail
data=${1:-/tmp/strata-bench/data}
work=${2:-/tmp/strata-bench/s3}
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
strata=${STRATA_BIN:-$repo_root/target/release/strata}
[ -x "$strata" ] || (cd "$repo_root" && cargo build --release --quiet)
[ -d "$data/mixed" ] || "$repo_root/../shared/bench/make_datasets.sh" "$data"
command -v restic >/dev/null || apt-get install -y -qq restic
garage=$("$repo_root/scripts/garage.sh")
rm -rf "$work"; mkdir -p "$work"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
secret=$(head -c32 /dev/urandom | od -An -tx1 | tr -d ' \n')
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for i in 0 1 2; do
  d=$work/garage/n$i; mkdir -p "$d"
  rpc=$(port); s3=$(port); admin=$(port)
  cat > "$d/garage.toml" <<CONF
metadata_dir = "$d/meta"
data_dir = "$d/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
[admin]
api_bind_addr = "127.0.0.1:$admin"
CONF
  chmod 600 "$d/garage.toml"
  echo "$s3" > "$d/s3_port"; echo "$admin" > "$d/admin_port"
  RUST_LOG=warn "$garage" -c "$d/garage.toml" server >"$d/log" 2>&1 & pids+=($!)
done
g() { "$garage" -c "$work/garage/n0/garage.toml" "$@"; }
ids=()
for i in 0 1 2; do
  for _ in $(seq 300); do id=$("$garage" -c "$work/garage/n$i/garage.toml" node id -q 2>/dev/null) && break; sleep 0.1; done
  ids+=("$id")
done
g node connect "${ids[1]}" >/dev/null; g node connect "${ids[2]}" >/dev/null
for i in 0 1 2; do g layout assign -z "dc$i" -c 100G "${ids[$i]%@*}" >/dev/null; done
g layout apply --version 1 >/dev/null
key_id=GK$(head -c12 /dev/urandom | od -An -tx1 | tr -d ' \n')
key_secret=$(head -c32 /dev/urandom | od -An -tx1 | tr -d ' \n')
g key import -n bench --yes "$key_id" "$key_secret" >/dev/null
g bucket create bench >/dev/null
g bucket allow --read --write --owner bench --key bench >/dev/null
for i in 0 1 2; do
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$(cat "$work/garage/n$i/admin_port")/health" >/dev/null && break; sleep 0.1; done
done
endpoint=http://127.0.0.1:$(cat "$work/garage/n0/s3_port")

export AWS_ACCESS_KEY_ID=$key_id AWS_SECRET_ACCESS_KEY=$key_secret AWS_REGION=garage AWS_DEFAULT_REGION=garage
export STRATA_S3_ENDPOINT=$endpoint
export STRATA_PASSPHRASE=bench RESTIC_PASSWORD=bench STRATA_CACHE_DIR=$work/cache RESTIC_CACHE_DIR=$work/restic-cache
src=$data/mixed
size=$(du -sb "$src" | cut -f1)
declare -A secs
t() { # t LABEL CMD...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/.t" "$@" >"$work/$label.log" 2>&1 || { echo "$label FAILED (see $work/$label.log)"; return 1; }
  local s rss; read -r s rss < <(tail -1 "$work/.t")
  secs[$label]=$s
  printf '| %-26s | %7.2f | %8.1f | %6d |\n' "$label" "$s" "$(echo "$size / 1000000 / $s" | bc -l)" "$((rss / 1024))"
}
echo "dataset: $src ($size bytes); Garage $("$garage" --version | cut -d' ' -f2) x3 on loopback (replication 3, sqlite), endpoint $endpoint"
echo "strata: $("$strata" --version); restic: $(restic version | cut -d' ' -f2)"
tar cf - "$src" | cat >/dev/null   # warm the page cache once, for every step alike
echo
echo "| step | wall s | MB/s | peak RSS MiB |"
echo "|---|---:|---:|---:|"
"$strata" init "$work/local-repo" >/dev/null 2>&1
t "strata create local" "$strata" create "$work/local-repo::a" "$src"
"$strata" init s3://bench/strata >/dev/null 2>&1
t "strata create s3" "$strata" create s3://bench/strata::a "$src"
t "strata create s3 unchanged" "$strata" create s3://bench/strata::b "$src"
mkdir -p "$work/x1" "$work/x2"
t "strata extract local" sh -c "cd $work/x1 && exec $strata extract $work/local-repo::a"
t "strata extract s3" sh -c "cd $work/x2 && exec $strata extract s3://bench/strata::a"
rm -rf "$work/x1" "$work/x2"
t "strata check local" "$strata" check --verify-data "$work/local-repo"
t "strata check s3" "$strata" check --verify-data s3://bench/strata
restic -r "s3:$endpoint/bench/restic" init >/dev/null 2>&1
t "restic backup s3" restic -r "s3:$endpoint/bench/restic" backup -q "$src"
t "restic backup s3 unchanged" restic -r "s3:$endpoint/bench/restic" backup -q "$src"
mkdir -p "$work/x3"
t "restic restore s3" restic -r "s3:$endpoint/bench/restic" restore latest -q --target "$work/x3"
rm -rf "$work/x3"
t "restic check s3" restic -r "s3:$endpoint/bench/restic" check --read-data -q
ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
echo
echo "| ratio (wall time) | value |"
echo "|---|---:|"
echo "| strata s3 create / strata local create (throughput: inverse) | $(ratio "${secs[strata create local]}" "${secs[strata create s3]}") |"
echo "| strata s3 create / restic s3 backup (time) | $(ratio "${secs[strata create s3]}" "${secs[restic backup s3]}") |"
echo "| strata s3 unchanged / restic s3 unchanged | $(ratio "${secs[strata create s3 unchanged]}" "${secs[restic backup s3 unchanged]}") |"
echo "| strata s3 extract / restic s3 restore | $(ratio "${secs[strata extract s3]}" "${secs[restic restore s3]}") |"
echo "| strata s3 check / restic s3 check | $(ratio "${secs[strata check s3]}" "${secs[restic check s3]}") |"
