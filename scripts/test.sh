#!/usr/bin/env bash
# Runs every Boxyard test on this machine: installs what is missing, builds the workspace, the guest image and the
# root filesystem, then runs the whole suite with cargo-nextest (real QEMU VMs included; TCG where the host has no
# hardware virtualization). Usage: scripts/test.sh [extra nextest arguments]
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

step() { echo "==> $*" >&2; }

step "system packages"
bash scripts/setup.sh

step "module structure (no import circles)"
python3 scripts/check-imports.py

step "build (workspace, tests)"
cargo build --workspace --all-targets --locked

step "guest image"
bash scripts/build-guest.sh >/dev/null
step "root filesystem"
bash scripts/build-rootfs.sh >/dev/null

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  echo "cargo-nextest not found; using cargo test" >&2
  cargo test --workspace --locked --no-fail-fast "$@"
fi

# The API contract on a stack of its own: a generated client, then schemathesis (tests/contract, docs/api.md).
step "API contract: a generated client and schemathesis (scripts/fuzz-api.sh)"
bash scripts/fuzz-api.sh

# The Python SDK: install, mypy --strict, sdist and wheel, its tests on a stack of its own (sdk/python).
step "Python SDK (scripts/test-python-sdk.sh)"
bash scripts/test-python-sdk.sh

# Ignored by default because most hosts have no hardware virtualization; run here when this one has it.
if grep -qwE 'vmx|svm' /proc/cpuinfo && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
  step "tests that need KVM"
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run -p boxyard-runner --test qemu_vm --locked --run-ignored only boots_with_kvm_acceleration_when_available
  else
    cargo test -p boxyard-runner --test qemu_vm --locked -- --ignored boots_with_kvm_acceleration_when_available
  fi
fi
