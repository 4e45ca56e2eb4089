#!/usr/bin/env bash
# Builds the Boxyard guest boot artifacts (kernel + initramfs) into a content-addressed build directory.
# See --help. Run as root or not; nothing here needs privileges.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/build-guest.sh [--out DIR]

Builds the guest boot artifacts into DIR/<hash16>/ and points DIR/current at it:
  vmlinuz           the current Debian cloud kernel (linux-image-cloud-amd64, resolved through apt)
  initramfs.cpio    newc cpio: /init = boxyard-guest agent, /lib/modules/boxyard/*.ko + modules.order
                    (initramfs.cpio.gz instead when BOXYARD_INITRAMFS_COMPRESS=gzip)
  manifest.json     kernel version/package, modules in load order, agent sha256, hash

<hash16> is a sha256 over the kernel .deb, the ordered module list, the agent binary, this script and the
compression choice; when that directory already exists the build is skipped. The last stdout line is the
output directory.

Options:
  --out DIR   build directory (default: <repo>/build/guest)
  -h, --help  this text

Environment:
  BOXYARD_GUEST_BIN=PATH           use this agent binary instead of running cargo
  CARGO_TARGET_DIR                 honoured when locating the cargo-built agent
  BOXYARD_INITRAMFS_COMPRESS=none|gzip   initramfs compression (default: none; gzip costs boot time under TCG)
EOF
}

log() { echo "build-guest: $*" >&2; }
die() { echo "build-guest: error: $*" >&2; exit 1; }

script_path="$(readlink -f "${BASH_SOURCE[0]}")"
repo="$(cd "$(dirname "$script_path")/.." && pwd)"
out="$repo/build/guest"

while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out="$2"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

compress="${BOXYARD_INITRAMFS_COMPRESS:-none}"
case "$compress" in none|gzip) ;; *) die "BOXYARD_INITRAMFS_COMPRESS must be none or gzip, not '$compress'" ;; esac

# Modules the agent needs; dependencies are added from modules.dep.
# button + evdev: the ACPI power button (QMP system_powerdown) reaches the agent as KEY_POWER for a graceful stop.
wanted_modules=(virtio_pci virtio_mmio virtio_blk virtio_console overlay button evdev)
meta_pkg=linux-image-cloud-amd64

for tool in apt-cache apt-get dpkg-deb depmod cpio sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || [ -x "/sbin/$tool" ] \
    || die "missing tool '$tool' (run scripts/setup.sh)"
done
PATH="$PATH:/usr/sbin:/sbin"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
cache="$repo/build/cache"
debs="$cache/debs"
mkdir -p "$debs"

tmp=""
work=""
cleanup() {
  if [ -n "$tmp" ] && [ -d "$tmp" ]; then rm -rf "$tmp"; fi
  if [ -n "$work" ] && [ -d "$work" ]; then rm -rf "$work"; fi
  rm -f "$out/.current.tmp.$$" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. resolve the kernel package through apt -------------------------------------------------------------
# One apt-cache call (apt's binary cache may be disabled, making each call ~0.5 s): the candidate record of the
# metapackage names the versioned image package, normally pinned with "(= version)".
resolve_kernel_pkg() {
  apt-cache show --no-all-versions "$meta_pkg" 2>/dev/null \
    | awk -F': ' '/^Depends:/ {print $2; exit}' | tr ',|' '\n\n' \
    | sed -E 's/^ +//; s/ +$//' | grep -E '^linux-image-[0-9][^ ]*-cloud-amd64( |$)' | head -n1
}
dep="$(resolve_kernel_pkg || true)"
if [ -z "$dep" ]; then
  log "apt lists lack $meta_pkg; running apt-get update"
  if [ "$(id -u)" -eq 0 ]; then apt-get update -qq >&2; else sudo apt-get update -qq >&2; fi
  dep="$(resolve_kernel_pkg || true)"
  [ -n "$dep" ] || die "cannot resolve $meta_pkg to a versioned kernel package"
fi
kpkg="${dep%% *}"
kver_pkg="$(sed -nE 's/.*\(= *([^) ]+)\).*/\1/p' <<<"$dep")"
if [ -z "$kver_pkg" ]; then
  kver_pkg="$(apt-cache policy "$kpkg" | awk '/Candidate:/ {print $2}')"
  [ -n "$kver_pkg" ] && [ "$kver_pkg" != "(none)" ] || die "no candidate version for $kpkg"
fi
kver="${kpkg#linux-image-}"
deb="$debs/${kpkg}_${kver_pkg//:/%3a}_amd64.deb"
if [ ! -s "$deb" ]; then
  log "downloading $kpkg $kver_pkg"
  dl="$(mktemp -d "$debs/.dl.XXXXXX")"
  tmp="$dl"
  (cd "$dl" && apt-get download -q=2 "$kpkg=$kver_pkg" 2>&1 | grep -v 'unsandboxed as root' >&2 || true)
  f="$(ls "$dl"/*.deb 2>/dev/null | head -n1 || true)"
  [ -n "$f" ] && [ -s "$f" ] || die "apt-get download $kpkg=$kver_pkg failed"
  mv -f "$f" "$deb"
  rm -rf "$dl"; tmp=""
else
  log "kernel $kpkg $kver_pkg (cached .deb)"
fi
deb_sha="$(sha256sum "$deb" | cut -d' ' -f1)"

# ---- 2. the agent binary ------------------------------------------------------------------------------------
if [ -n "${BOXYARD_GUEST_BIN:-}" ]; then
  agent="$BOXYARD_GUEST_BIN"
  log "agent: $agent (BOXYARD_GUEST_BIN)"
else
  log "building boxyard-guest (cargo, profile guest, static)"
  (cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --profile guest -p boxyard-guest --target x86_64-unknown-linux-gnu >&2)
  target_dir="${CARGO_TARGET_DIR:-$repo/target}"
  case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
  agent="$target_dir/x86_64-unknown-linux-gnu/guest/boxyard-guest"
fi
[ -f "$agent" ] || die "agent binary not found: $agent"
if command -v readelf >/dev/null 2>&1 && readelf -lW "$agent" 2>/dev/null | grep -q 'INTERP'; then
  die "agent binary $agent is dynamically linked; it runs as /init and must be static"
fi
agent_sha="$(sha256sum "$agent" | cut -d' ' -f1)"
script_sha="$(sha256sum "$script_path" | cut -d' ' -f1)"

# ---- 3. module load order (cached per kernel .deb + script) -------------------------------------------------
order_cache="$cache/modules-${deb_sha:0:16}-${script_sha:0:16}.order"
tree=""
extract_kernel() {
  if [ -z "$tree" ]; then
    tmp="$(mktemp -d "$cache/.guest.XXXXXX")"
    tree="$tmp/root"
    log "extracting $(basename "$deb")"
    dpkg-deb -x "$deb" "$tree"
    [ -d "$tree/lib/modules/$kver" ] || die "no /lib/modules/$kver in $deb"
    depmod -b "$tree" "$kver"
  fi
}
if [ -s "$order_cache" ]; then
  mapfile -t modules <"$order_cache"   # relative paths, e.g. kernel/drivers/virtio/virtio.ko
else
  extract_kernel
  mdir="$tree/lib/modules/$kver"
  declare -A deps=() done_=()
  while IFS= read -r line; do
    key="${line%%:*}"; deps["$key"]="${line#*:}"
  done <"$mdir/modules.dep"
  declare -A by_name=()
  for k in "${!deps[@]}"; do
    n="$(basename "$k")"; n="${n%%.ko*}"; by_name["${n//-/_}"]="$k"
  done
  modules=()
  visit() {
    local m="$1" d
    [ -n "${done_[$m]:-}" ] && return 0
    done_["$m"]=1
    for d in ${deps[$m]}; do visit "$d"; done   # transitive deps of $m, each visited deps-first
    modules+=("$m")
  }
  for w in "${wanted_modules[@]}"; do
    if [ -n "${by_name[$w]:-}" ]; then
      visit "${by_name[$w]}"
    elif grep -qE "/${w//_/[_-]}\.ko$" "$mdir/modules.builtin"; then
      log "module $w is built into the kernel; skipping"
    else
      die "module $w neither in modules.dep nor modules.builtin of $kver"
    fi
  done
  printf '%s\n' "${modules[@]}" >"$order_cache.tmp.$$"
  mv -f "$order_cache.tmp.$$" "$order_cache"
fi
[ "${#modules[@]}" -gt 0 ] || log "warning: all wanted modules are built in"
module_files=()
for m in "${modules[@]}"; do module_files+=("$(basename "$m")"); done
[ "$(printf '%s\n' "${module_files[@]}" | sort | uniq -d | wc -l)" -eq 0 ] || die "duplicate module file names"

# ---- 4. content hash / fast path ----------------------------------------------------------------------------
hash="$({
  echo "kernel-deb $deb_sha"
  printf 'module %s\n' "${modules[@]}"
  echo "agent $agent_sha"
  echo "script $script_sha"
  echo "compress $compress"
} | sha256sum | cut -d' ' -f1)"
h16="${hash:0:16}"
initrd_name="initramfs.cpio"; [ "$compress" = gzip ] && initrd_name="initramfs.cpio.gz"
dest="$out/$h16"

point_current() {
  ln -sfn "$h16" "$out/.current.tmp.$$"
  mv -T "$out/.current.tmp.$$" "$out/current"
}

if [ -s "$dest/manifest.json" ] && [ -s "$dest/vmlinuz" ] && [ -s "$dest/$initrd_name" ]; then
  log "up to date ($h16)"
  point_current
  echo "$dest"
  exit 0
fi

# ---- 5. build -----------------------------------------------------------------------------------------------
extract_kernel
mdir="$tree/lib/modules/$kver"
stage="$tmp/initramfs"
mkdir -p "$stage/lib/modules/boxyard"
for d in dev proc sys run newroot tmp; do mkdir -p "$stage/$d"; done
chmod 1777 "$stage/tmp"
install -m 0755 "$agent" "$stage/init"
for m in "${modules[@]}"; do
  [ -f "$mdir/$m" ] || die "module file missing: $m"
  install -m 0644 "$mdir/$m" "$stage/lib/modules/boxyard/"
done
printf '%s\n' "${module_files[@]}" >"$stage/lib/modules/boxyard/modules.order"
chmod 0644 "$stage/lib/modules/boxyard/modules.order"
find "$stage" -type d -exec chmod go-w {} + ; chmod 1777 "$stage/tmp"
find "$stage" -exec touch -h -d @0 {} +

work="$(mktemp -d "$out/.build-$h16.XXXXXX")"
log "packing initramfs ($compress, ${#modules[@]} modules)"
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort \
  | cpio -o -H newc --reproducible -R 0:0 --quiet >"$work/initramfs.cpio")
if [ "$compress" = gzip ]; then gzip -9 -n "$work/initramfs.cpio"; fi
install -m 0644 "$tree/boot/vmlinuz-$kver" "$work/vmlinuz"

{
  printf '{\n'
  printf '  "hash": "%s",\n' "$hash"
  printf '  "kernel_version": "%s",\n' "$kver"
  printf '  "kernel_package": "%s",\n' "$kpkg"
  printf '  "kernel_package_version": "%s",\n' "$kver_pkg"
  printf '  "kernel_deb_sha256": "%s",\n' "$deb_sha"
  printf '  "modules": ['
  sep=""
  for f in "${module_files[@]}"; do printf '%s"%s"' "$sep" "${f%.ko}"; sep=", "; done
  printf '],\n'
  printf '  "agent_sha256": "%s",\n' "$agent_sha"
  printf '  "initramfs": "%s",\n' "$initrd_name"
  printf '  "compression": "%s"\n' "$compress"
  printf '}\n'
} >"$work/manifest.json"

rm -rf "$dest"
chmod 0755 "$work"
mv -T "$work" "$dest"
work=""
point_current
log "built $h16 (kernel $kver, initramfs $(du -h "$dest/$initrd_name" | cut -f1))"
echo "$dest"
