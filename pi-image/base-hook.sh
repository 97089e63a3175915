#!/bin/sh
# mmdebstrap essential hook (pi-image/build.sh): runs on the new root ($1)
# after the essential packages, before the kernel and raspi-firmware, whose
# hooks read these files when they write the boot partition's cmdline.txt
# and config.txt. Part of the base cache key: edit it and the base rebuilds.
set -eu
root=$1
mkdir -p "$root/etc/default" "$root/etc/initramfs-tools/conf.d" "$root/boot/firmware"
# The root file system by label (the image's second partition); serial
# console on the GPIO header and HDMI.
cat >"$root/etc/default/raspi-firmware" <<'CONF'
ROOTPART=LABEL=RASPIROOT
CONSOLES="ttyS1,115200 tty0"
CONF
# fsck repairs after a power cut without asking; the kernel reboots itself
# 10 s after a panic instead of hanging at a family house.
echo 'fsck.repair=yes panic=10' >"$root/etc/default/raspi-extra-cmdline"
echo 'COMPRESS=zstd' >"$root/etc/initramfs-tools/conf.d/strata-compress.conf"
