#!/usr/bin/env bash
# Installs Garage (the S3-compatible store of tests/it/s3.rs and
# bench/s3.sh) from the crate registry into /var/cache/strata-ci/garage,
# once: about 19 minutes on 2 cores, then reused while the version matches.
# Prints the binary's path. GARAGE_ROOT overrides the install directory.
set -euo pipefail
version=2.5.0
root=${GARAGE_ROOT:-/var/cache/strata-ci/garage}
bin=$root/bin/garage
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "cargo:$version "; then
  echo "$bin"
  exit 0
fi
mkdir -p "$root"
# SQLite for metadata (no LMDB), no metrics or K2V: what the tests use.
cargo install garage --version "$version" --locked --no-default-features \
  --features bundled-libs,sqlite --root "$root" --target-dir "$root/target" >&2
rm -rf "$root/target"
echo "$bin"
