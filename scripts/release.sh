#!/usr/bin/env bash
# Release build: the strata binary for x86_64, aarch64 and armv7 (no Docker:
# Debian's cross compilers, see docs/arm.md), each checked by its selftest
# (under qemu-user for ARM), packaged as a .deb (amd64, arm64, armhf) and as
# a bare binary, with SHA256SUMS, in dist/.
#
#   scripts/release.sh                          build and package all three
#   PROFILE=dev scripts/release.sh              another cargo profile
#   scripts/release.sh package ARCH BINARY DIR  package a built binary (ARCH:
#                                               amd64, arm64 or armhf)
#   scripts/release.sh checksums DIR            write DIR/SHA256SUMS
#   DEB_COMPRESSION=none ...                    faster packages (tests)
#
# Needs: dpkg-deb, readelf, and for the ARM builds the packages and targets
# that scripts/test.sh installs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
PROFILE=${PROFILE:-release}
# File times in the packages: the last commit's. Not exported: build
# scripts watch SOURCE_DATE_EPOCH, and setting it would rebuild everything.
EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

triple_of() {
  case "$1" in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    armhf) echo armv7-unknown-linux-gnueabihf ;;
    *) echo "unknown Debian architecture $1 (amd64, arm64, armhf)" >&2; return 1 ;;
  esac
}

# How to run a binary of ARCH here, and its binutils prefix.
runner_of() {
  case "$1" in
    amd64) echo "" ;;
    arm64) echo "qemu-aarch64-static -L /usr/aarch64-linux-gnu" ;;
    armhf) echo "qemu-arm-static -L /usr/arm-linux-gnueabihf" ;;
  esac
}
strip_of() {
  case "$1" in
    amd64) echo strip ;;
    arm64) echo aarch64-linux-gnu-strip ;;
    armhf) echo arm-linux-gnueabihf-strip ;;
  esac
}

# The newest glibc symbol version the binary needs: its libc6 dependency.
glibc_of() {
  readelf --dyn-syms --wide "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' \
    | sort -V | tail -n 1
}

# package ARCH BINARY DIR: DIR/strata_VERSION_ARCH.deb and the bare binary
# DIR/strata-VERSION-TRIPLE, both stripped.
package() {
  local arch=$1 bin=$2 out=$3 triple stage glibc
  triple=$(triple_of "$arch")
  [ -x "$bin" ] || { echo "no binary at $bin" >&2; return 1; }
  mkdir -p "$out"
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' RETURN
  chmod 0755 "$stage"
  install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" \
    "$stage/etc/strata" "$stage/usr/share/doc/strata"
  install -m 0755 "$bin" "$stage/usr/bin/strata"
  "$(strip_of "$arch")" --strip-debug "$stage/usr/bin/strata"
  for unit in strata.service strata-backup.service strata-backup.timer; do
    # Debian packages install to /usr/bin, not /usr/local/bin.
    sed 's#/usr/local/bin/strata#/usr/bin/strata#g' "packaging/systemd/$unit" \
      >"$stage/lib/systemd/system/$unit"
    chmod 0644 "$stage/lib/systemd/system/$unit"
  done
  install -m 0644 packaging/deb/strata.toml "$stage/etc/strata/strata.toml"
  install -m 0644 README.md docs/config.md docs/arm.md "$stage/usr/share/doc/strata/"
  printf 'strata %s\nCopyright: the strata authors\n' "$VERSION" \
    >"$stage/usr/share/doc/strata/copyright"
  install -m 0755 packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm "$stage/DEBIAN/"
  echo /etc/strata/strata.toml >"$stage/DEBIAN/conffiles"
  glibc=$(glibc_of "$stage/usr/bin/strata")
  cat >"$stage/DEBIAN/control" <<CONTROL
Package: strata
Version: $VERSION
Architecture: $arch
Maintainer: strata developers <strata@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Depends: libc6 (>= $glibc), adduser
Recommends: fuse3
Section: admin
Priority: optional
Homepage: https://github.com/strata-backup/strata
Description: deduplicating, compressing, encrypting backup with an off-site tier
 strata backs up file trees into repositories: deduplicated by
 content-defined chunks, compressed, and encrypted on the client
 (AES-256-GCM or ChaCha20-Poly1305). One binary is the client, the SSH
 server of repositories, the replicator to off-site Raspberry Pis and the
 scheduling daemon (strata.service) with its metrics and web page.
CONTROL
  (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' \
    | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
  find "$stage" -exec touch -h -d "@$EPOCH" {} +
  SOURCE_DATE_EPOCH=$EPOCH dpkg-deb --root-owner-group "-Z${DEB_COMPRESSION:-xz}" --build "$stage" "$out/strata_${VERSION}_${arch}.deb" >/dev/null
  install -m 0755 "$stage/usr/bin/strata" "$out/strata-$VERSION-$triple"
  echo "$out/strata_${VERSION}_${arch}.deb (libc6 >= $glibc)"
}

checksums() {
  local sums
  sums=$(cd "$1" && find . -maxdepth 1 -type f ! -name SHA256SUMS -printf '%P\n' | sort \
    | xargs sha256sum)
  printf '%s\n' "$sums" >"$1/SHA256SUMS"
  echo "$1/SHA256SUMS"
}

build_all() {
  local out=dist arch triple bin
  rm -rf "$out"
  for arch in amd64 arm64 armhf; do
    triple=$(triple_of "$arch")
    if [ "$triple" = "$(rustc -vV | sed -n 's/^host: //p')" ]; then
      # The host's own build (and its target directory) is the same thing.
      cargo build --locked --profile "$PROFILE"
      bin="target/$PROFILE/strata"
    else
      cargo build --locked --profile "$PROFILE" --target "$triple"
      bin="target/$triple/$PROFILE/strata"
    fi
    # Never ship a build that fails its known answers on its own platform.
    # shellcheck disable=SC2046
    $(runner_of "$arch") "$bin" selftest
    package "$arch" "$bin" "$out"
  done
  checksums "$out"
}

case "${1:-}" in
  "") build_all ;;
  package) [ $# -eq 4 ] || { echo "usage: $0 package ARCH BINARY DIR" >&2; exit 2; }; package "$2" "$3" "$4" ;;
  checksums) [ $# -eq 2 ] || { echo "usage: $0 checksums DIR" >&2; exit 2; }; checksums "$2" ;;
  *) echo "usage: $0 [package ARCH BINARY DIR | checksums DIR]" >&2; exit 2 ;;
esac
