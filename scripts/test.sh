#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need (idempotently),
# then formatting, lints and every test. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages the tests use: mount/umount (full-disk test on tmpfs), a C
# compiler for the zstd/lzma/blake3/SQLite C sources, a real OpenSSH server
# and client for the remote-repository tests (tests/it/sshd.rs), iproute2
# for the network-namespace hosts (tests/it/offsite.rs), PostgreSQL for the
# database-dump tests, Python 3 (its standard smtpd is the SMTP server of
# the daemon tests), systemd-analyze for the unit files, and Prometheus
# (promtool for the alert rules, a real server scraping the daemon).
missing=()
command -v mount >/dev/null || missing+=(mount)
command -v cc >/dev/null || missing+=(gcc)
command -v make >/dev/null || missing+=(make)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
{ command -v ssh && command -v ssh-keygen; } >/dev/null || missing+=(openssh-client)
command -v ip >/dev/null || missing+=(iproute2)
command -v runuser >/dev/null || missing+=(util-linux)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v python3 >/dev/null || missing+=(python3)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
# fusermount3, for `strata mount` by users other than root (tests/it/mount.rs
# mounts as root through /dev/fuse).
command -v fusermount3 >/dev/null || missing+=(fuse3)
# wg (wireguard-tools) cross-checks the WireGuard keys `strata node
# provision` makes (tests/it/pi_image.rs).
command -v wg >/dev/null || missing+=(wireguard-tools)
# qemu-system-aarch64 boots the Raspberry Pi image (pi-image/boot-test.sh).
command -v qemu-system-aarch64 >/dev/null || missing+=(qemu-system-arm)
{ command -v prometheus && command -v promtool; } >/dev/null || missing+=(prometheus)
# libfaketime, for clients and a Pi whose clocks are a day off
# (tests/it/clock.rs).
[ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || missing+=(faketime)
# borg itself, for `strata import-borg` (tests/it/borg_import.rs).
[ -x /usr/bin/borg ] || missing+=(borgbackup)
# Headless Chromium, driven by playwright-core under Node, for the web page
# test (tests/it/web.rs, tests/browser/).
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
# Cross compilers with their libc, and qemu-user, for the Raspberry Pi
# builds that tests/it/arm.rs runs (docs/arm.md).
for p in gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross \
  gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'install ok installed' >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  rustup target list --installed | grep -x "$t" >/dev/null || rustup target add "$t"
done
# playwright-core (no browser download: it drives Debian's chromium).
want=$(node -p "require('./tests/browser/package-lock.json').packages['node_modules/playwright-core'].version")
have=$(node -p "try { require('./tests/browser/node_modules/playwright-core/package.json').version } catch (e) { '' }")
[ "$want" = "$have" ] || npm ci --prefix tests/browser --no-audit --no-fund
# Ansible, ansible-lint and a Debian root file system for tests/it/ansible.rs.
scripts/ansible-prepare.sh
# The Raspberry Pi image's Debian base (arm64, with the Pi kernel and
# firmware), cached in /var/cache/strata-pi: about 10 minutes under
# qemu-user the first time, then reused until its package list changes.
# It installs what it needs (mmdebstrap, mtools, dosfstools, fdisk).
pi-image/build.sh base
# Garage, the S3 store of tests/it/s3.rs (three nodes on loopback): built
# from the crate registry once (about 19 minutes), cached in
# /var/cache/strata-ci/garage.
scripts/garage.sh >/dev/null

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Micro-benchmarks (benches/micro/), each once on small inputs: ~5 s to build, 2 s to run.
cargo test --locked --bench micro
# Fuzzing (fuzz/, docs/reliability.md): nightly cargo-fuzz (installed by the
# script if missing) builds every target once, then runs each for 8 s:
# about 2 minutes of build when only strata changed, 10 the first time
# (the build is kept in /var/cache/strata-ci/fuzz-target between runs).
start=$SECONDS
FUZZ_TARGET_DIR=/var/cache/strata-ci/fuzz-target scripts/fuzz.sh 8
echo "fuzzed in $((SECONDS - start)) s"
# The Raspberry Pi release binaries (target/<triple>/release/strata) that
# tests/it/arm.rs runs under qemu-user: about 6 minutes each on 2 cores.
for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  start=$SECONDS
  cargo build --locked --release --target "$t"
  echo "built $t in $((SECONDS - start)) s"
done
cargo nextest run --locked --no-fail-fast
# the README's first command must keep working
cargo run --quiet --locked -- demo >/dev/null
echo "all tests passed"
