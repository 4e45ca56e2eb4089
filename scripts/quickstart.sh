#!/usr/bin/env bash
# From a fresh clone to a command running in a real microVM: installs the system packages, builds the runner, the
# guest image (Debian cloud kernel + guest agent initramfs) and a busybox root filesystem, then runs
#   boxyard-runner vm run -- echo hello from a microVM
# Extra arguments replace the command, e.g. scripts/quickstart.sh -- uname -a
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

step() { echo "==> $*" >&2; }

step "system packages"
bash scripts/setup.sh
step "building boxyard-runner (first build takes a few minutes)"
cargo build --locked -p boxyard-runner
step "guest image"
bash scripts/build-guest.sh >/dev/null
step "root filesystem"
bash scripts/build-rootfs.sh >/dev/null

if [ "${1:-}" = "--" ]; then shift; fi
if [ $# -eq 0 ]; then set -- echo hello from a microVM; fi
step "booting a microVM and running: $*"
exec target/debug/boxyard-runner vm run -v -- "$@"
