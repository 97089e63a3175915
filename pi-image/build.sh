#!/usr/bin/env bash
# Builds a flashable Raspberry Pi image that boots into a ready strata
# off-site node (pi-image/README.md). Debian packages only: mmdebstrap and
# qemu-user-static for the foreign root, e2fsprogs (mkfs.ext4 -d), dosfstools
# and mtools for the boot partition, fdisk (sfdisk) for the partition table.
# No loop devices, no mounts of the image: it builds on any Debian machine
# with binfmt_misc, CI included.
#
#   pi-image/build.sh --deb dist/strata_0.1.0_arm64.deb        the whole image
#   pi-image/build.sh base                                      only the cached base
#   pi-image/build.sh rootfs --deb FILE                         base + strata, no image
#
# Options:
#   --arch arm64|armhf   64-bit (Pi 3, 4, 5, Zero 2) or 32-bit (Pi 2, 3) [arm64]
#   --suite SUITE        Debian release [trixie]
#   --mirror URL         Debian mirror; a snapshot.debian.org URL pins every
#                        package for a bit-identical rebuild [deb.debian.org]
#   --deb FILE           the strata .deb of that architecture
#                        (scripts/release.sh builds it)
#   --out DIR            where rootfs/, the image and its checksum go [pi-image/out]
#   --cache DIR          where base root file systems are kept [/var/cache/strata-pi]
#   --xz                 also write IMAGE.xz (what users download and flash)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
HERE=$PWD

STAGE=image
ARCH=arm64
SUITE=trixie
MIRROR=http://deb.debian.org/debian
DEB=
OUT=$HERE/out
CACHE=/var/cache/strata-pi
XZ=0
abs() { case "$1" in /*) echo "$1" ;; *) echo "$OLDPWD/$1" ;; esac; }
while [ $# -gt 0 ]; do
  case "$1" in
    base | rootfs | image) STAGE=$1 ;;
    --arch) ARCH=$2; shift ;;
    --suite) SUITE=$2; shift ;;
    --mirror) MIRROR=$2; shift ;;
    --deb) DEB=$(abs "$2"); shift ;;
    --out) OUT=$(abs "$2"); shift ;;
    --cache) CACHE=$(abs "$2"); shift ;;
    --xz) XZ=1 ;;
    -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

die() { echo "build.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root: the root file system keeps its owners (sudo $0 ...)"

case "$ARCH" in
  # The Pi kernels Debian builds: arm64 for 64-bit Pis, armmp for ARMv7.
  arm64) KERNEL=linux-image-arm64; QEMU=aarch64 ;;
  armhf) KERNEL=linux-image-armmp; QEMU=arm ;;
  *) die "--arch $ARCH: arm64 or armhf" ;;
esac

# What every node needs; nothing that writes to the SD card on its own.
PACKAGES="$KERNEL raspi-firmware systemd systemd-sysv systemd-resolved systemd-timesyncd
udev kmod dbus openssh-server wireguard-tools e2fsprogs dosfstools util-linux iproute2
ca-certificates adduser initramfs-tools zstd netbase less"

need() {
  local missing=() p
  for p in mmdebstrap mkfs.ext4:e2fsprogs mkfs.vfat:dosfstools mcopy:mtools sfdisk:fdisk zstd xz:xz-utils; do
    command -v "${p%%:*}" >/dev/null || missing+=("${p#*:}")
  done
  [ -e "/usr/libexec/qemu-binfmt/$QEMU-binfmt-P" ] || missing+=(qemu-user-static)
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
  # Run the Pi's binaries through qemu: register Debian's binfmt entry
  # (F: the kernel keeps the interpreter open, so it works inside chroots).
  [ -e /proc/sys/fs/binfmt_misc/register ] \
    || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc \
    || die "binfmt_misc is not available: load the module (modprobe binfmt_misc)"
  if [ ! -e "/proc/sys/fs/binfmt_misc/qemu-$QEMU" ]; then
    cat "/usr/lib/binfmt.d/qemu-$QEMU.conf" >/proc/sys/fs/binfmt_misc/register \
      || die "could not register qemu-$QEMU with binfmt_misc"
  fi
}

# The base root file system, cached by everything that shapes it.
base() {
  local key tmp
  key=$(printf '%s\n' "$ARCH" "$SUITE" "$MIRROR" $PACKAGES | cat - base-hook.sh | sha256sum | cut -c1-16)
  BASE=$CACHE/base-$SUITE-$ARCH-$key.tar.zst
  [ -s "$BASE" ] && { echo "base: $BASE (cached)"; return; }
  mkdir -p "$CACHE"
  tmp=$BASE.tmp.tar
  echo "base: building $BASE (several minutes under qemu)"
  local start=$SECONDS
  # shellcheck disable=SC2086
  mmdebstrap --mode=root --arch="$ARCH" --variant=minbase \
    --components=main,non-free-firmware \
    --include="$(echo $PACKAGES | tr ' ' ',')" \
    --aptopt='Acquire::Retries "3"' \
    --dpkgopt='force-confold' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --essential-hook="$HERE/base-hook.sh \"\$1\"" \
    "$SUITE" "$tmp" \
    "deb $MIRROR $SUITE main non-free-firmware" \
    "deb $MIRROR $SUITE-updates main non-free-firmware" \
    "deb ${MIRROR%/debian}/debian-security $SUITE-security main non-free-firmware" \
    >"$BASE.log" 2>&1 || { tail -n 40 "$BASE.log" >&2; die "mmdebstrap failed: the whole log is $BASE.log"; }
  zstd -q -T0 --rm -f "$tmp" -o "$BASE"
  echo "base: built in $((SECONDS - start)) s"
}

# Runs a command in the new root, with /dev and /proc (binfmt runs the
# Pi's binaries through qemu).
MOUNTS=()
in_root() {
  if [ ${#MOUNTS[@]} -eq 0 ]; then
    mount --bind /dev "$ROOT/dev" && MOUNTS+=("$ROOT/dev")
    mount -t proc proc "$ROOT/proc" && MOUNTS+=("$ROOT/proc")
  fi
  chroot "$ROOT" "$@"
}
unmount_all() {
  local m
  for m in "${MOUNTS[@]}"; do umount "$m" || umount -l "$m"; done
  MOUNTS=()
}
trap unmount_all EXIT

# The base plus strata, the node's units and settings: what the SD card's
# two partitions hold, in $OUT/rootfs-$ARCH.
rootfs() {
  [ -n "$DEB" ] || die "--deb FILE: the strata .deb for $ARCH (scripts/release.sh package $ARCH BINARY DIR makes it)"
  [ -f "$DEB" ] || die "--deb $DEB: no such file"
  local deb_arch
  deb_arch=$(dpkg-deb -f "$DEB" Architecture)
  [ "$deb_arch" = "$ARCH" ] || die "--deb $DEB is for $deb_arch, not $ARCH"
  ROOT=$OUT/rootfs-$ARCH
  rm -rf "$ROOT"
  mkdir -p "$ROOT"
  tar -C "$ROOT" --zstd --numeric-owner -xpf "$BASE"
  cp "$DEB" "$ROOT/tmp/strata.deb"
  in_root dpkg -i /tmp/strata.deb >/dev/null
  rm "$ROOT/tmp/strata.deb"
  # The node's static pieces, owned by root whoever checked them out.
  tar -C overlay --owner=0 --group=0 --mode=u+rw,go+r,go-w -cf - . | tar -C "$ROOT" --no-same-permissions -xf -
  cp ../docs/pi-image.md "$ROOT/usr/share/doc/strata/pi-image.md"
  ln -sfn ../run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"
  echo strata-node >"$ROOT/etc/hostname"
  # Made per node at first boot, never shared by every card: host keys
  # (the provisioned one replaces them) and the machine id.
  rm -f "$ROOT"/etc/ssh/ssh_host_*
  : >"$ROOT/etc/machine-id"
  rm -f "$ROOT/var/lib/dbus/machine-id"
  systemctl --root="$ROOT" --quiet enable strata-firstboot.service systemd-networkd.service \
    systemd-resolved.service systemd-timesyncd.service
  # First boot enables these once the node has its keys and settings.
  systemctl --root="$ROOT" --quiet disable ssh.service strata.service strata-backup.timer
  # Units that write to the (read-only) root: networkd keeps its state
  # in /run instead.
  systemctl --root="$ROOT" --quiet mask apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
    systemd-networkd-persistent-storage.service
  # No sshd but the one on the VPN (this generator adds local sockets).
  mkdir -p "$ROOT/etc/systemd/system-generators"
  ln -sfn /dev/null "$ROOT/etc/systemd/system-generators/systemd-ssh-generator"
  # The drive's mount point: systemd cannot create it on a read-only root.
  install -d -m 0755 "$ROOT/mnt/strata"
  printf 'strata %s on Debian %s (%s), image built %s\n' \
    "$(in_root strata --version | awk '{print $2}')" "$SUITE" "$ARCH" \
    "$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%MZ)" >"$ROOT/etc/strata-image"
  unmount_all
  echo "rootfs: $ROOT ($(du -sh "$ROOT" | cut -f1))"
}

# The flashable image: a DOS partition table, the FAT boot partition
# (RASPIFIRM: firmware, kernel, initrd, config.txt, cmdline.txt) and the
# ext4 root (RASPIROOT), both built from directories by mkfs, no mounts.
image() {
  local boot_mb=256 root_mb img work
  img=$OUT/strata-pi-$SUITE-$ARCH.img
  work=$OUT/.image-$ARCH
  rm -rf "$work" "$img" "$img.xz"
  mkdir -p "$work/boot"
  # The boot partition's files leave the root (they live on the FAT).
  mv "$ROOT/boot/firmware" "$work/boot/firmware"
  mkdir -m 0755 "$ROOT/boot/firmware"
  # Room for a kernel upgrade or two: the root is read-only otherwise.
  root_mb=$(du -sm "$ROOT" | cut -f1)
  root_mb=$(( (root_mb * 5 / 4 + 384 + 3) / 4 * 4 ))
  truncate -s "${root_mb}M" "$work/root.ext4"
  E2FSPROGS_FAKE_TIME=$EPOCH mkfs.ext4 -q -L RASPIROOT -d "$ROOT" -E root_owner=0:0 \
    "$work/root.ext4" "${root_mb}M"
  rmdir "$ROOT/boot/firmware"
  mv "$work/boot/firmware" "$ROOT/boot/firmware"
  mkfs.vfat -F 32 -n RASPIFIRM -C "$work/boot.vfat" $((boot_mb * 1024)) >/dev/null
  MTOOLS_SKIP_CHECK=1 mcopy -s -p -m -i "$work/boot.vfat" "$ROOT/boot/firmware/"* ::/
  truncate -s $((4 + boot_mb + root_mb))M "$img"
  sfdisk --quiet "$img" <<TABLE
label: dos
label-id: 0x5354524b
unit: sectors
start=8192, size=$((boot_mb * 2048)), type=c, bootable
start=$((8192 + boot_mb * 2048)), size=$((root_mb * 2048)), type=83
TABLE
  dd if="$work/boot.vfat" of="$img" bs=1M seek=4 conv=notrunc,sparse status=none
  dd if="$work/root.ext4" of="$img" bs=1M seek=$((4 + boot_mb)) conv=notrunc,sparse status=none
  rm -rf "$work"
  if [ "$XZ" = 1 ]; then
    xz -T0 -6 -k "$img"
    (cd "$OUT" && sha256sum "$(basename "$img")" "$(basename "$img").xz" >"$(basename "$img").sha256")
  else
    (cd "$OUT" && sha256sum "$(basename "$img")" >"$(basename "$img").sha256")
  fi
  echo "image: $img ($((4 + boot_mb + root_mb)) MiB; flash it with: dd if=$(basename "$img") of=/dev/sdX bs=4M conv=fsync)"
}

# File times in the image: the last commit's (or SOURCE_DATE_EPOCH).
EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
start=$SECONDS
mkdir -p "$OUT"
need
base
[ "$STAGE" = base ] && exit 0
rootfs
[ "$STAGE" = rootfs ] && exit 0
image
echo "built in $((SECONDS - start)) s"
