#!/usr/bin/env bash
# Boots a built image for real, under qemu-system-aarch64 (`virt` machine,
# the image's own kernel and initrd, the image as the disk, a blank USB
# drive on an emulated xHCI controller), twice:
#   1. the first boot: strata-firstboot.service applies a provisioned
#      strata-node.toml (consent to format the blank drive), then reboots;
#   2. the node as it runs from then on: read-only root, the drive mounted,
#      the repository created on it, WireGuard, sshd and the daemon up.
# It reads what happened from the serial console and, after power-off,
# from the disks themselves (debugfs, mtools). Not the Pi's hardware: the
# firmware, the Pi's device tree and its watchdog are not exercised.
#
#   pi-image/boot-test.sh [IMAGE]     default pi-image/out/strata-pi-trixie-arm64.img
#
# Needs: qemu-system-arm (installed if missing), a strata binary for this
# machine ($STRATA, or target/release or target/debug) to provision the
# node, ssh-keygen. KEEP=1 keeps the disks and console logs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
IMG=$(realpath "${1:-out/strata-pi-trixie-arm64.img}")
[ -f "$IMG" ] || { echo "boot-test.sh: no image at $IMG: run pi-image/build.sh first" >&2; exit 1; }
command -v qemu-system-aarch64 >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-arm
}
# $STRATA, or the newer of the release and debug builds.
STRATA=${STRATA:-$(ls -t ../target/release/strata ../target/debug/strata 2>/dev/null | head -n 1 || true)}
[ -n "$STRATA" ] && STRATA=$(realpath "$STRATA")
[ -n "$STRATA" ] || { echo "boot-test.sh: build strata first (cargo build)" >&2; exit 1; }

W=$(mktemp -d /tmp/strata-boot-test.XXXXXX)
trap 'rm -rf "$W"' EXIT
[ -n "${KEEP:-}" ] && trap - EXIT # KEEP=1: keep the disks and console logs
export MTOOLS_SKIP_CHECK=1
fail() { echo "FAIL: $*" >&2; echo "(console logs: $W/boot*.log, kept)" >&2; trap - EXIT; exit 1; }
step() { echo "== $*"; }

# The image's partitions, from its table.
start_of() { sfdisk -J "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['partitiontable']['partitions'][$2]['start'])"; }
cp --sparse=always "$IMG" "$W/disk.img"
BOOT_OFF=$(( $(start_of "$W/disk.img" 0) * 512 ))
ROOT_OFF=$(( $(start_of "$W/disk.img" 1) * 512 ))

step "provision a node and put its settings on the boot partition"
ssh-keygen -q -t ed25519 -N '' -C strata@central -f "$W/central"
# The central node's WireGuard public key: any valid key (nothing answers
# at the endpoint; the interface comes up without a handshake).
CENTRAL_WG=HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=
"$STRATA" node provision grandma --address 10.8.0.12/24 --endpoint 10.0.2.2:51820 \
  --central-address 10.8.0.1 --central-wg-public-key "$CENTRAL_WG" \
  --central-ssh-key "$W/central.pub" --format-blank-drive --out "$W/grandma" >/dev/null
mcopy -i "$W/disk.img@@$BOOT_OFF" "$W/grandma/strata-node.toml" ::/strata-node.toml
mcopy -i "$W/disk.img@@$BOOT_OFF" ::/vmlinuz "$W/vmlinuz" 2>/dev/null \
  || mcopy -i "$W/disk.img@@$BOOT_OFF" "::/$(mdir -b -i "$W/disk.img@@$BOOT_OFF" ::/ | grep -o 'vmlinuz[^ ]*' | head -1)" "$W/vmlinuz"
mcopy -i "$W/disk.img@@$BOOT_OFF" "::/$(mdir -b -i "$W/disk.img@@$BOOT_OFF" ::/ | grep -o 'initrd[^ ]*' | head -1)" "$W/initrd"
truncate -s 256M "$W/usb.img"

boot() {
  local log=$1
  : >"$log"
  # -no-reboot: a reboot ends qemu, so the first boot's reboot ends run 1.
  timeout "${2:-900}" qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -nographic -no-reboot \
    -kernel "$W/vmlinuz" -initrd "$W/initrd" \
    -append "root=LABEL=RASPIROOT rootwait console=ttyAMA0 fsck.repair=yes panic=10 systemd.show_status=1 systemd.journald.forward_to_console=1" \
    -drive file="$W/disk.img",if=virtio,format=raw \
    -device qemu-xhci -drive if=none,id=usb,file="$W/usb.img",format=raw -device usb-storage,drive=usb \
    -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile= </dev/null >"$log" 2>&1 &
  QEMU=$!
}

step "first boot (applies strata-node.toml, formats the blank USB drive, reboots)"
start=$SECONDS
boot "$W/boot1.log"
# It ends itself by rebooting; a login prompt means first boot did not.
while kill -0 "$QEMU" 2>/dev/null; do
  grep -aq "login: " "$W/boot1.log" && { kill "$QEMU"; break; }
  sleep 1
done
wait "$QEMU" || true
echo "   took $((SECONDS - start)) s"
grep -q "node grandma is set up" "$W/boot1.log" || fail "first boot did not finish: $(grep -a strata "$W/boot1.log" | tail -5)"
grep -q "format /dev/sda as ext4 labelled STRATA" "$W/boot1.log" || fail "the blank USB drive was not formatted"
[ "$(blkid -p -s LABEL -o value "$W/usb.img")" = STRATA ] || fail "usb.img has no STRATA file system"
mdir -b -i "$W/disk.img@@$BOOT_OFF" ::/ | grep -q 'strata-node.toml.done' || fail "no strata-node.toml.done"
mdir -b -i "$W/disk.img@@$BOOT_OFF" ::/ | grep -q 'strata-node.toml$' && fail "the keys are still on the card"

step "second boot (the node as it runs: read-only root, drive, repository, VPN, sshd, daemon)"
start=$SECONDS
boot "$W/boot2.log"
# Up when the daemon has started (it runs its selftest first); then cut
# the power, as a family member would: the root is read-only.
for _ in $(seq 1 600); do
  grep -aq "Started strata.service" "$W/boot2.log" && grep -aq "Started ssh.service" "$W/boot2.log" && break
  kill -0 "$QEMU" 2>/dev/null || break
  sleep 1
done
sleep 20 # let the daemon write its state on the drive before the power cut
kill "$QEMU" 2>/dev/null || true
wait "$QEMU" 2>/dev/null || true
echo "   took $((SECONDS - start)) s"
# The journal on the console names every unit in full.
for done in "Mounted mnt-strata.mount" "Finished strata-offsite-init.service" \
  "Finished wg-quick@wg0.service" "Started ssh.service" "Started strata.service"; do
  grep -aq "systemd\[1\]: $done" "$W/boot2.log" || fail "not on the console: $done"
done
grep -aE "FAILED|Failed to start" "$W/boot2.log" && fail "a unit failed on the second boot"
dd if="$W/disk.img" of="$W/root.ext4" bs=1M skip=$((ROOT_OFF / 1048576)) status=none
debugfs -R "cat /etc/fstab" "$W/root.ext4" 2>/dev/null | grep -q "LABEL=RASPIROOT / ext4 ro," || fail "fstab not read-only"
e2fsck -fn "$W/root.ext4" >/dev/null 2>&1 || fail "the root file system is not clean after the power cut"
# The repository the node made on its drive, checked by this machine's
# strata (mounting replays the drive's journal after the power cut).
mkdir "$W/usb"
mount -o loop "$W/usb.img" "$W/usb"
[ -f "$W/usb/offsite/config" ] || { umount "$W/usb"; fail "no repository on the drive"; }
"$STRATA" check "$W/usb/offsite" >"$W/check.log" 2>&1 || { umount "$W/usb"; fail "strata check of the drive: $(tail -1 "$W/check.log")"; }
umount "$W/usb"
echo "PASS: first boot and a normal boot of $(basename "$IMG") under qemu-system-aarch64"
