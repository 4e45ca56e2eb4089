#!/usr/bin/env bash
# Installs every system package Boxyard needs, from Debian's archive only. Idempotent: packages already present are
# skipped, so a second run does nothing but check.
#
#   qemu-system-x86   the QEMU VM backend (TCG here, KVM on hosts with VMX/SVM)
#   e2fsprogs         mkfs.ext4 -d for root images and per-box writable disks
#   busybox-static    the userland of the default root filesystem
#   kmod              depmod, to order the guest kernel modules
#   cpio              packs the guest initramfs
#   cmake, libclang-dev, pkg-config, build-essential
#                     build mountpoint-s3-client's AWS C runtime (bindgen needs libclang)
#   ca-certificates   TLS to the package registries
#   acpica-tools      iasl: boxyard-vmm's test disassembles the DSDT it generates
#   postgresql-15     initdb/pg_ctl/postgres for the throwaway clusters of the control-plane tests and the local
#                     stack (the tests find them in PATH or /usr/lib/postgresql/15/bin; no server is started here)
#   systemd           systemd-analyze, which verifies the units in deploy/systemd (tests/systemd.rs; nothing is
#                     started: in a container systemd is only installed)
set -euo pipefail

packages=(qemu-system-x86 e2fsprogs busybox-static kmod cpio cmake libclang-dev pkg-config build-essential
  ca-certificates acpica-tools postgresql-15 systemd)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#packages[@]} system packages already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
