#!/usr/bin/env bash
# Prepares what the Ansible tests (tests/it/ansible.rs) need, idempotently:
# - a Python venv with Ansible (the community bundle: its chroot connection
#   plugin) and a current ansible-lint (Debian's 6.13 is too old for the
#   production profile), in /opt/strata-ci/ansible;
# - a Debian bookworm root file system (debootstrap, minbase plus what the
#   roles expect on a fresh node), cached as a tarball the tests unpack once
#   per target node. Both are rebuilt when missing or when the pins change.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

ANSIBLE_PIN="ansible==12.3.0 ansible-lint==26.10.1"
VENV=/opt/strata-ci/ansible
ROOTFS=/var/cache/strata-ci/bookworm-rootfs.tar.zst
ROOTFS_PACKAGES=python3,systemd,systemd-sysv,openssh-server,openssh-client,wireguard-tools,e2fsprogs,util-linux,iproute2,ca-certificates

missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v zstd >/dev/null || missing+=(zstd)
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if [ "$(cat "$VENV/.pins" 2>/dev/null)" != "$ANSIBLE_PIN" ]; then
  as_root rm -rf "$VENV"
  as_root mkdir -p "$(dirname "$VENV")"
  as_root /usr/bin/python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  as_root "$VENV/bin/pip" install -q $ANSIBLE_PIN
  echo "$ANSIBLE_PIN" | as_root tee "$VENV/.pins" >/dev/null
fi

if [ "$(cat "$ROOTFS.packages" 2>/dev/null)" != "$ROOTFS_PACKAGES" ]; then
  work=$(mktemp -d)
  trap 'as_root rm -rf "$work"' EXIT
  as_root debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" \
    bookworm "$work/root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; exit 1; }
  as_root mkdir -p "$(dirname "$ROOTFS")"
  as_root tar -C "$work/root" --zstd -cpf "$ROOTFS.tmp" .
  as_root mv "$ROOTFS.tmp" "$ROOTFS"
  echo "$ROOTFS_PACKAGES" | as_root tee "$ROOTFS.packages" >/dev/null
fi
