#!/usr/bin/env bash
# Builds Boxyard's default root filesystem: an ext4 image holding busybox-static. No root privileges needed.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/build-rootfs.sh [--out PATH]

Builds an ext4 root filesystem image (label boxyard-root, no journal) from busybox-static: /bin/busybox plus a
symlink per applet, /sbin -> bin, /usr/bin -> ../bin, /usr/sbin -> ../bin, /etc/{passwd,group,hostname,hosts,
os-release}, users root (0), box (1000, /home/box) and nobody (65534). The image is reproducible (fixed UUID,
hash seed, timestamps) and rebuilt only when busybox or this script changed (stamp file PATH.stamp).

Options:
  --out PATH  image path (default: <repo>/build/rootfs/busybox.ext4)
  -h, --help  this text
EOF
}

log() { echo "build-rootfs: $*" >&2; }
die() { echo "build-rootfs: error: $*" >&2; exit 1; }

script_path="$(readlink -f "${BASH_SOURCE[0]}")"
repo="$(cd "$(dirname "$script_path")/.." && pwd)"
out="$repo/build/rootfs/busybox.ext4"

while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a path"; out="$2"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

PATH="$PATH:/usr/sbin:/sbin"
command -v mkfs.ext4 >/dev/null 2>&1 || die "mkfs.ext4 missing (run scripts/setup.sh)"

# busybox-static installs /bin/busybox (with merged /usr also reachable as /usr/bin/busybox).
busybox=""
if command -v dpkg >/dev/null 2>&1; then
  busybox="$(dpkg -L busybox-static 2>/dev/null | grep -E '^(/usr)?/bin/busybox$' | head -n1 || true)"
fi
[ -n "$busybox" ] || busybox=/bin/busybox
[ -x "$busybox" ] || die "busybox not found at $busybox (install busybox-static)"
if command -v readelf >/dev/null 2>&1 && readelf -lW "$busybox" 2>/dev/null | grep -q INTERP; then
  die "$busybox is dynamically linked; install busybox-static"
fi

# Fixed identity so the image is byte-for-byte reproducible.
uuid=7b0c5e2a-4f3d-4e1b-9a6c-b0c5fa11e001
hash_seed=7b0c5e2a-4f3d-4e1b-9a6c-b0c5fa11e002
epoch=0

mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
stamp="$out.stamp"

bb_sha="$(sha256sum "$busybox" | cut -d' ' -f1)"
script_sha="$(sha256sum "$script_path" | cut -d' ' -f1)"
inputs="busybox $bb_sha
script $script_sha"
if [ -s "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$inputs" ]; then
  log "up to date ($out)"
  echo "$out"
  exit 0
fi

tmp="$(mktemp -d "$(dirname "$out")/.rootfs.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
root="$tmp/root"
umask 022
mkdir -p "$root"/{bin,etc,proc,sys,dev,run,tmp,root,home/box,var/tmp,mnt,usr}
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 0700 "$root/root"
ln -s bin "$root/sbin"
ln -s ../bin "$root/usr/bin"
ln -s ../bin "$root/usr/sbin"

log "staging busybox $("$busybox" 2>&1 | head -n1 | awk '{print $2}')"
install -m 0755 "$busybox" "$root/bin/busybox"
n=0
while IFS= read -r applet; do
  case "$applet" in ""|busybox|*/*) continue ;; esac
  ln -s busybox "$root/bin/$applet"
  n=$((n + 1))
done < <("$busybox" --list | LC_ALL=C sort -u)
[ -L "$root/bin/sh" ] || die "busybox has no sh applet"

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
box:x:1000:1000:box:/home/box:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
box:x:1000:
nogroup:x:65534:
EOF
cat >"$root/etc/shadow" <<'EOF'
root:*:0:0:99999:7:::
box:*:0:0:99999:7:::
nobody:*:0:0:99999:7:::
EOF
chmod 0640 "$root/etc/shadow"
echo boxyard >"$root/etc/hostname"
cat >"$root/etc/hosts" <<'EOF'
127.0.0.1	localhost
127.0.1.1	boxyard
::1	localhost ip6-localhost ip6-loopback
EOF
cat >"$root/etc/os-release" <<'EOF'
NAME="boxyard-busybox"
ID=boxyard-busybox
PRETTY_NAME="Boxyard BusyBox root"
HOME_URL="https://github.com/boxyard"
EOF
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
: >"$root/etc/resolv.conf"

# Fixed timestamps (symlinks included) for reproducibility.
find "$root" -exec touch -h -d "@$epoch" {} +

# Size: content + headroom, at least 32 MiB, rounded up to whole MiB.
content_kib="$(du -sk --apparent-size "$root" | cut -f1)"
size_mib=$(( (content_kib * 2 / 1024) + 16 ))
[ "$size_mib" -ge 32 ] || size_mib=32

log "mkfs.ext4 (${size_mib} MiB, $n applets)"
img="$tmp/image.ext4"
E2FSPROGS_FAKE_TIME="$epoch" SOURCE_DATE_EPOCH="$epoch" \
  mkfs.ext4 -q -F -t ext4 -d "$root" -O ^has_journal -L boxyard-root -U "$uuid" \
    -E "hash_seed=$hash_seed,root_owner=0:0" -b 4096 -I 256 -m 0 "$img" "${size_mib}M" >/dev/null

# mke2fs 1.47.0 ignores E2FSPROGS_FAKE_TIME/SOURCE_DATE_EPOCH: it stamps ctime/crtime of every inode (and all
# times of / and lost+found) with the current time, and copies the invoking user's uid/gid when not root.
# One debugfs pass fixes owners and times; then the superblock timestamps are zeroed (debugfs rewrites s_wtime
# when it closes the image, so that is patched last, with the superblock checksum recomputed).
command -v debugfs >/dev/null 2>&1 || die "debugfs missing (e2fsprogs)"
cmds="$tmp/fixup.debugfs"
{
  for p in / /lost+found; do
    printf 'sif "%s" %s 0\n' "$p" uid "$p" gid
  done
  (cd "$root" && find . -mindepth 1 | LC_ALL=C sort) | while IFS= read -r p; do
    p="/${p#./}"
    owner=0; [ "$p" = /home/box ] && owner=1000
    printf 'sif "%s" uid %s\nsif "%s" gid %s\n' "$p" "$owner" "$p" "$owner"
    printf 'sif "%s" %s 0\n' "$p" atime "$p" mtime "$p" ctime "$p" crtime
  done
  # / and lost+found, plus reserved inodes 1 (bad blocks) and 7 (resize inode), which mke2fs also stamps.
  for p in / /lost+found '<1>' '<7>'; do
    printf 'sif "%s" %s 0\n' "$p" atime "$p" mtime "$p" ctime "$p" crtime
  done
  printf 'ssv %s 0\n' mkfs_time lastcheck mtime
} >"$cmds"
debugfs -w -f "$cmds" "$img" >"$tmp/debugfs.log" 2>&1 || { cat "$tmp/debugfs.log" >&2; die "debugfs fixup failed"; }
if grep -qiE 'error|not found|invalid' "$tmp/debugfs.log"; then
  grep -iE 'error|not found|invalid' "$tmp/debugfs.log" | head >&2; die "debugfs fixup reported errors"
fi

if command -v python3 >/dev/null 2>&1; then
  python3 - "$img" <<'PY'
import struct, sys
# Zero s_wtime (offset 0x30) in every superblock copy and recompute the metadata_csum crc32c (offset 1020).
tbl = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    tbl.append(c)
def crc32c(data, crc=0xFFFFFFFF):
    for b in data:
        crc = tbl[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc
with open(sys.argv[1], "r+b") as f:
    f.seek(1024)
    sb = f.read(1024)
    blocks_count, = struct.unpack_from("<I", sb, 0x04)
    first_data_block, log_block_size, _, blocks_per_group = struct.unpack_from("<IIII", sb, 0x14)
    compat, incompat, ro_compat = struct.unpack_from("<III", sb, 0x5C)
    bs = 1024 << log_block_size
    groups = (blocks_count - first_data_block + blocks_per_group - 1) // blocks_per_group
    def has_super(g):
        if g <= 1 or not (ro_compat & 0x1):
            return True
        for p in (3, 5, 7):
            n = p
            while n < g:
                n *= p
            if n == g:
                return True
        return False
    offsets = [1024] + [(first_data_block + g * blocks_per_group) * bs + (1024 if bs == 1024 else 0)
                        for g in range(1, groups) if has_super(g)]
    if compat & 0x200:  # sparse_super2: not used here
        offsets = [1024]
    for off in offsets:
        f.seek(off)
        s = bytearray(f.read(1024))
        if struct.unpack_from("<H", s, 0x38)[0] != 0xEF53:
            continue
        struct.pack_into("<I", s, 0x30, 0)
        if ro_compat & 0x400:  # metadata_csum
            struct.pack_into("<I", s, 1020, crc32c(bytes(s[:1020])))
        f.seek(off)
        f.write(s)
PY
else
  log "warning: python3 missing; superblock write time left as is (image not byte-reproducible)"
fi

if command -v e2fsck >/dev/null 2>&1; then
  e2fsck -fn "$img" >/dev/null 2>&1 || die "e2fsck reports errors on the new image"
fi

mv -f "$img" "$out"
printf '%s\n' "$inputs" >"$stamp.tmp.$$"
mv -f "$stamp.tmp.$$" "$stamp"
log "built $out ($(sha256sum "$out" | cut -c1-16))"
echo "$out"
