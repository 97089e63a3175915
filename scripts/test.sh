#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need (idempotently),
# then formatting, lints and every test. CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages the tests use: mount/umount (full-disk test on tmpfs), a C
# compiler for the zstd/lzma/blake3 C sources, and a real OpenSSH server and
# client for the remote-repository tests (tests/it/sshd.rs).
missing=()
command -v mount >/dev/null || missing+=(mount)
command -v cc >/dev/null || missing+=(gcc)
command -v make >/dev/null || missing+=(make)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
{ command -v ssh && command -v ssh-keygen; } >/dev/null || missing+=(openssh-client)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo nextest run --locked --no-fail-fast
# the README's first command must keep working
cargo run --quiet --locked -- demo >/dev/null
echo "all tests passed"
