#!/usr/bin/env bash
# Runs a command inside an L1 Linux guest that has a real /dev/kvm (nested KVM on QEMU's emulated AMD SVM), with
# the host's root file system visible read-only at the same paths. See --help.
set -euo pipefail

usage() {
  cat <<'EOF2'
Usage: scripts/nested-kvm.sh [options] -- CMD [ARGS...]

Boots an L1 guest under qemu-system-x86_64 (TCG, -M q35 -cpu EPYC-Rome: SVM with nested paging) from the full
Debian kernel (linux-image-amd64: it has the 9p modules the cloud kernel lacks), loads kvm_amd, mounts the host's
root read-only over 9p, chroots into it (proc, sys, cgroup v2 at /sys/fs/cgroup with the memory, cpu and pids
controllers enabled for the root's children, dev, and tmpfs on /tmp, /run, /var/tmp/nested-scratch, with the
working directory, the repository and the program bound back when they live there), changes
to the current directory and runs CMD there as root. CMD's stdout and stderr come out on this script's stdout (the
L1 serial console, kernel messages suppressed); the script exits with CMD's exit status, 124 when the timeout hit,
125 when L1 failed before running CMD.

Inside, the file /dev/kvm is hardware-style KVM (kvm_amd, npt=1), and BOXYARD_NESTED=1 is set. The caller's
environment is not carried in (only HOME=/root and a standard PATH): put what CMD needs on its command line.

Options:
  --mem MIB       L1 memory (default 2048)
  --cpus N        L1 vCPUs (default 2)
  --timeout SECS  overall limit (default 600)
  --keep          keep the L1 work directory (printed) for debugging
  --retry         boot L1 once more when it timed out or failed before CMD ended (L1 under TCG, or its nested
                  KVM, sometimes hangs); each attempt gets the whole --timeout
  -h, --help      this text

The L1 kernel .deb is downloaded once (apt-get download) into build/cache/debs, the L1 initramfs (static busybox +
modules) is cached in build/nested/.
EOF2
}

log() { echo "nested-kvm: $*" >&2; }
die() { echo "nested-kvm: error: $*" >&2; exit 125; }

script_path="$(readlink -f "${BASH_SOURCE[0]}")"
repo="$(cd "$(dirname "$script_path")/.." && pwd)"
mem=2048
cpus=2
timeout_s=600
keep=0
attempts=1
while [ $# -gt 0 ]; do
  case "$1" in
    --mem) mem="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    --timeout) timeout_s="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --retry) attempts=2; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[ $# -gt 0 ] || { usage >&2; die "no command given"; }

PATH="$PATH:/usr/sbin:/sbin"
for tool in qemu-system-x86_64 apt-get dpkg-deb depmod modprobe cpio busybox; do
  command -v "$tool" >/dev/null 2>&1 || die "missing tool '$tool' (run scripts/setup.sh)"
done
busybox_bin="$(command -v busybox)"
if command -v readelf >/dev/null 2>&1 && readelf -lW "$busybox_bin" | grep -q INTERP; then
  die "$busybox_bin is dynamically linked; install busybox-static"
fi

cache="$repo/build/cache"
debs="$cache/debs"
nested="$repo/build/nested"
mkdir -p "$debs" "$nested"

# ---- the L1 kernel: linux-image-amd64's versioned package, through apt -------------------------------------
kpkg="$(apt-cache show --no-all-versions linux-image-amd64 2>/dev/null | awk -F': ' '/^Depends:/ {print $2; exit}' \
  | tr ',|' '\n\n' | sed -E 's/^ +//; s/ .*//' | grep -E '^linux-image-[0-9].*-amd64$' | head -n1 || true)"
if [ -z "$kpkg" ]; then
  log "apt lists lack linux-image-amd64; running apt-get update"
  apt-get update -qq >&2
  kpkg="$(apt-cache show --no-all-versions linux-image-amd64 | awk -F': ' '/^Depends:/ {print $2; exit}' \
    | tr ',|' '\n\n' | sed -E 's/^ +//; s/ .*//' | grep -E '^linux-image-[0-9].*-amd64$' | head -n1)"
fi
[ -n "$kpkg" ] || die "cannot resolve linux-image-amd64"
kver="${kpkg#linux-image-}"
deb="$(ls "$debs/${kpkg}"_*.deb 2>/dev/null | head -n1 || true)"
if [ -z "$deb" ]; then
  log "downloading $kpkg"
  dl="$(mktemp -d "$debs/.dl.XXXXXX")"
  (cd "$dl" && apt-get download -q=2 "$kpkg" 2>&1 | grep -v 'unsandboxed as root' >&2 || true)
  f="$(ls "$dl"/*.deb 2>/dev/null | head -n1 || true)"
  [ -n "$f" ] || die "apt-get download $kpkg failed"
  mv -f "$f" "$debs/"
  rm -rf "$dl"
  deb="$debs/$(basename "$f")"
fi

# ---- the L1 initramfs: static busybox, the modules in load order, /init ------------------------------------
key="$(sha256sum "$deb" "$script_path" "$busybox_bin" | sha256sum | cut -c1-16)"
l1="$nested/$key"
if [ ! -s "$l1/initramfs.cpio" ]; then
  log "building the L1 initramfs for $kver"
  work="$(mktemp -d "$nested/.build.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  dpkg-deb -x "$deb" "$work/tree"
  depmod -b "$work/tree" "$kver"
  root="$work/root"
  mkdir -p "$root"/{bin,dev,proc,sys,host,mods,out}
  cp "$busybox_bin" "$root/bin/busybox"
  : > "$root/mods/order"
  for m in kvm_amd virtio_pci 9pnet_virtio 9p; do
    modprobe -d "$work/tree" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
  done | awk '!seen[$0]++' | while read -r ko; do
    base="$(basename "$ko")"
    case "$ko" in
      *.ko.xz) xz -dc "$ko" > "$root/mods/${base%.xz}"; base="${base%.xz}" ;;
      *.ko.zst) zstd -qdc "$ko" > "$root/mods/${base%.zst}"; base="${base%.zst}" ;;
      *) cp "$ko" "$root/mods/$base" ;;
    esac
    echo "$base" >> "$root/mods/order"
  done
  cat > "$root/init" <<'EOF3'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# Loopback: runners, control planes and databases under test listen on 127.0.0.1.
ip link set lo up || fail_lo=1
for m in $(cat /mods/order); do
  insmod /mods/$m 2>/dev/null || echo "nested-kvm-l1: insmod $m failed" > /dev/ttyS0
done
fail() { echo "nested-kvm-l1: $*" > /dev/ttyS0; echo 125 > /out/rc 2>/dev/null; poweroff -f; }
[ -z "${fail_lo:-}" ] || echo "nested-kvm-l1: could not bring up lo" > /dev/ttyS0
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host || fail "mounting the host root"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out /out || fail "mounting the result share"
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
# cgroup v2 with the memory, cpu and pids controllers for the children of the root (the kvm backend's VM cgroups).
mount -t cgroup2 cgroup2 /host/sys/fs/cgroup && echo "+memory +cpu +pids" > /host/sys/fs/cgroup/cgroup.subtree_control \
  || echo "nested-kvm-l1: no cgroup v2 with memory, cpu, pids" > /dev/ttyS0
mount -t devtmpfs dev /host/dev
mount -t devpts devpts /host/dev/pts 2>/dev/null
mkdir -p /host/dev/shm && mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm
i=0
for p in $(cat /out/keep); do
  i=$((i+1)); mkdir -p /keep/$i; mount -o bind /host$p /keep/$i || fail "keeping $p visible"
done
for d in /tmp /run /var/tmp/nested-scratch; do
  [ -d /host$d ] && mount -t tmpfs -o mode=1777 tmpfs /host$d
done
i=0
for p in $(cat /out/keep); do
  i=$((i+1)); mkdir -p /host$p; mount -o bind /keep/$i /host$p || fail "binding $p back"
done
[ -c /dev/kvm ] || fail "no /dev/kvm after loading kvm_amd"
cwd="$(cat /out/cwd)"
chroot /host /bin/sh -c 'cd "$1" && export BOXYARD_NESTED=1 HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin && exec /bin/sh /proc/self/fd/3' sh "$cwd" 3</out/cmd.sh > /dev/ttyS0 2>&1 < /dev/null
echo $? > /out/rc
sync
poweroff -f
EOF3
  chmod +x "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet) > "$work/initramfs.cpio"
  mkdir -p "$l1"
  cp "$work/tree/boot/vmlinuz-$kver" "$l1/vmlinuz"
  mv "$work/initramfs.cpio" "$l1/initramfs.cpio"
  rm -rf "$work"; trap - EXIT
fi

# ---- run ---------------------------------------------------------------------------------------------------
out="$(mktemp -d /var/tmp/nested-kvm.XXXXXX)"
[ "$keep" = 1 ] && log "work directory: $out" || trap 'rm -rf "$out"' EXIT
pwd > "$out/cwd"
# Paths under the directories L1 covers with a tmpfs (/tmp, /run) that CMD needs (the working directory, the
# program, the repository, e.g. a checkout in /tmp): L1 binds them back over the tmpfs.
for p in "$(pwd)" "$repo" "${1:-}"; do
  case "$p" in
    /tmp/?*|/run/?*) top="$(printf '%s' "$p" | cut -d/ -f1-3)"; grep -qxF "$top" "$out/keep" 2>/dev/null || echo "$top" >> "$out/keep" ;;
  esac
done
touch "$out/keep"
{
  printf 'exec'
  for a in "$@"; do printf ' %q' "$a"; done
  printf '\n'
} > "$out/cmd.sh"
mkdir -p /var/tmp/nested-scratch
rc=125
for attempt in $(seq 1 "$attempts"); do
  rm -f "$out/rc"
  set +e
  timeout --foreground -k 5 "$timeout_s" qemu-system-x86_64 \
    -accel tcg,thread=multi -M q35 -cpu EPYC-Rome -m "$mem" -smp "$cpus" \
    -nodefaults -no-user-config -display none -no-reboot \
    -kernel "$l1/vmlinuz" -initrd "$l1/initramfs.cpio" \
    -append "console=ttyS0 quiet loglevel=1 panic=-1 tsc=reliable mitigations=off" \
    -serial stdio \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$out,mount_tag=out,security_model=none" < /dev/null \
    2> >(grep -v "TCG doesn't support requested feature" >&2)
  qrc=$?
  set -e
  if [ "$qrc" = 124 ]; then
    log "attempt $attempt: timed out after ${timeout_s}s"
    rc=124
  elif [ -s "$out/rc" ] && [ "$(cat "$out/rc")" != 125 ]; then
    exit "$(cat "$out/rc")"
  else
    log "attempt $attempt: L1 ended (qemu status $qrc) without running the command"
    rc=125
  fi
done
exit "$rc"
