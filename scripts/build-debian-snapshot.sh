#!/usr/bin/env bash
# Builds a realistic snapshot image: a minimal Debian root filesystem (debootstrap --variant=minbase, from the Debian
# archive apt uses) made into a reproducible ext4 image with the snapshot builder.
#
# Usage: scripts/build-debian-snapshot.sh [--suite bookworm] [--mirror URL] [--out build/debian/debian.ext4]
# Prints the image path. Takes a few minutes (downloads ~40 MB of packages); a second run reuses the tree.
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

suite=bookworm
mirror="$(grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)"
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
out=build/debian/debian.ext4
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) suite="$2"; shift 2 ;;
    --mirror) mirror="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "build-debian-snapshot: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
log() { echo "build-debian-snapshot: $*" >&2; }

[ "$(id -u)" -eq 0 ] || { log "debootstrap needs root"; exit 1; }
if ! command -v debootstrap >/dev/null 2>&1 && [ ! -x /usr/sbin/debootstrap ]; then
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"

tree="build/debian/$suite"
if [ ! -f "$tree/etc/debian_version" ]; then
  rm -rf "$tree.partial"
  log "debootstrap --variant=minbase $suite from $mirror (a few minutes)"
  debootstrap --variant=minbase "$suite" "$tree.partial" "$mirror" >&2
  # Nothing time- or host-specific that would change the image between builds.
  rm -rf "$tree.partial"/var/cache/apt/*.bin "$tree.partial"/var/lib/apt/lists/* "$tree.partial"/var/log/* \
    "$tree.partial"/tmp/* "$tree.partial"/etc/machine-id
  echo boxyard >"$tree.partial/etc/hostname"
  mv "$tree.partial" "$tree"
fi

log "building the image"
cargo build -q -p boxyard-snapshot --example build_image
"${CARGO_TARGET_DIR:-target}/debug/examples/build_image" "$tree" "$out" >&2
echo "$out"
