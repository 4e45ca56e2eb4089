#!/usr/bin/env bash
# From a fresh clone to a command running in a real microVM: installs the system packages, builds everything, the
# guest image (Debian cloud kernel + guest agent initramfs) and a busybox root filesystem, brings the local stack up
# (boxyard dev up: PostgreSQL, S3, control plane, one runner, the base snapshot, a `dev` profile), then runs
#   boxyard run --rm base -- echo hello from a microVM
# Extra arguments replace the command, e.g. scripts/quickstart.sh -- uname -a. Safe to re-run; stop the stack with
# target/debug/boxyard dev down.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

step() { echo "==> $*" >&2; }

step "system packages"
bash scripts/setup.sh
step "building boxyard (first build takes a few minutes)"
cargo build --locked --workspace --bins
step "guest image"
bash scripts/build-guest.sh >/dev/null
step "root filesystem"
bash scripts/build-rootfs.sh >/dev/null

step "local stack: PostgreSQL, S3, control plane, a runner, the base snapshot"
target/debug/boxyard dev up

if [ "${1:-}" = "--" ]; then shift; fi
if [ $# -eq 0 ]; then set -- echo hello from a microVM; fi
step "boxyard run --rm base -- $*"
exec target/debug/boxyard run --rm base -- "$@"
