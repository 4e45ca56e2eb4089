#!/usr/bin/env bash
# Boots the guest image N times with boxyard-vmm and N times with QEMU (-accel kvm -M microvm, the same kernel,
# initramfs, disks and agent port) and prints, per run and as medians: process start to agent READY (wall),
# the monitor's own CPU time at READY (process CPU minus the vCPU threads' time), and its RSS beyond guest memory
# (both monitors get their guest RAM from a memfd, so RSS minus shared memory is the monitor's own footprint).
# With --runner PATH (a boxyard-runner build) it then measures the exec round trip through the runner's two VM
# backends on this same machine: `boxyard-runner vm bench --backend kvm|qemu` boots one VM each and runs N (--execs,
# default 50) executions of `true` through the guest agent, printing median and p90.
# --thp sets this machine's /sys/kernel/mm/transparent_hugepage/shmem_enabled to `advise` for the run (restored
# after): both monitors ask for huge pages on their memfd guest RAM (madvise), so both get 2 MiB pages, and the
# nested page tables 512 times fewer entries. Without it the machine's setting is used (Debian's default: never).
# Needs /dev/kvm with hardware virtualization: run it directly on such a host, or here inside the harness:
#   scripts/nested-kvm.sh -- scripts/bench-vmm.sh [--runs N] [--vmm PATH] [--runner PATH [--execs N]] [--thp]
set -euo pipefail

repo="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
runs=3
runner=""
thp=0
execs=50
vmm="${CARGO_TARGET_DIR:-$repo/target}/release/boxyard-vmm"
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --vmm) vmm="$2"; shift 2 ;;
    --runner) runner="$2"; shift 2 ;;
    --execs) execs="$2"; shift 2 ;;
    --thp) thp=1; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "bench-vmm: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -c /dev/kvm ] || { echo "bench-vmm: no /dev/kvm" >&2; exit 2; }
[ -x "$vmm" ] || { echo "bench-vmm: no VMM binary at $vmm (cargo build --release -p boxyard-vmm)" >&2; exit 2; }
guest="$(readlink -f "$repo/build/guest/current")"
rootfs="$repo/build/rootfs/busybox.ext4"
work="$(mktemp -d)"
shmem_thp=/sys/kernel/mm/transparent_hugepage/shmem_enabled
old_thp="$(sed -E 's/.*\[([a-z]+)\].*/\1/' "$shmem_thp" 2>/dev/null || true)"
trap 'rm -rf "$work"; [ "$thp" = 1 ] && [ -n "$old_thp" ] && echo "$old_thp" > "$shmem_thp"' EXIT
if [ "$thp" = 1 ]; then
  echo advise > "$shmem_thp" || { echo "bench-vmm: cannot set $shmem_thp" >&2; exit 2; }
fi
echo "bench-vmm: shmem THP: $(cat "$shmem_thp" 2>/dev/null || echo unknown); anon THP: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo unknown)"
args="console=ttyS0 quiet panic=-1 reboot=t tsc=reliable no_timer_check mitigations=off pci=off random.trust_cpu=on"

python3 - "$runs" "$vmm" "$guest" "$rootfs" "$work" "$args" <<'PY'
import os, socket, statistics, subprocess, sys, time
runs, vmm, guest, rootfs, work, args = int(sys.argv[1]), *sys.argv[2:]
tick = os.sysconf("SC_CLK_TCK")

def cpu_ms(pid, exclude_prefix):
    """Process CPU time minus threads whose name starts with exclude_prefix (the vCPUs), in ms."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
            f = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if name.startswith(exclude_prefix):
            continue
        total += int(f[11]) + int(f[12])
    return total * 1000 / tick

def rss_beyond_guest_kib(pid):
    st = {l.split(":")[0]: l.split()[1] for l in open(f"/proc/{pid}/status") if l.startswith(("VmRSS", "RssShmem"))}
    return int(st["VmRSS"]) - int(st.get("RssShmem", 0))

def ready(sock, deadline):
    while True:
        try:
            s = socket.socket(socket.AF_UNIX); s.connect(sock); break
        except OSError:
            if time.monotonic() > deadline: raise TimeoutError("no socket")
            time.sleep(0.002)
    nonce = os.urandom(16).hex()
    s.sendall(f"BOXYARD-AGENT/1 HELLO {nonce}\n".encode())
    s.settimeout(max(1, deadline - time.monotonic()))
    buf = b""
    while f"READY {nonce}".encode() not in buf:
        d = s.recv(4096)
        if not d: raise EOFError("agent socket closed")
        buf += d
    return s

def one(kind, i):
    d = os.path.join(work, f"{kind}{i}")
    os.makedirs(d)
    rw = os.path.join(d, "rw.ext4")
    with open(rw, "wb") as f: f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", rw], check=True)
    sock = os.path.join(d, "agent.sock")
    if kind == "vmm":
        cmd = [vmm, "--kernel", f"{guest}/vmlinuz", "--initramfs", f"{guest}/initramfs.cpio", "--memory", "512",
               "--cmdline", args, "--disk", f"{rootfs},serial=boxyard-root,ro", "--disk", f"{rw},serial=boxyard-rw",
               "--agent-socket", sock, "--console-log", os.path.join(d, "console.log"), "--jail-uid", "4000000"]
        vcpu_prefix = "vcpu"
    else:
        cmd = ["qemu-system-x86_64", "-name", "bench,debug-threads=on", "-M", "microvm,acpi=on,rtc=on", "-accel", "kvm", "-cpu", "host", "-smp", "1",
               "-m", "512M", "-object", "memory-backend-memfd,id=mem,size=512M", "-M", "memory-backend=mem",
               "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
               "-kernel", f"{guest}/vmlinuz", "-initrd", f"{guest}/initramfs.cpio", "-append", args,
               "-chardev", f"file,id=con,path={d}/console.log", "-serial", "chardev:con",
               "-drive", f"if=none,id=root,format=raw,readonly=on,file={rootfs}",
               "-device", "virtio-blk-device,drive=root,serial=boxyard-root",
               "-drive", f"if=none,id=rw,format=raw,file={rw}", "-device", "virtio-blk-device,drive=rw,serial=boxyard-rw",
               "-device", "virtio-serial-device", "-chardev", f"socket,id=agent,path={sock},server=on,wait=off",
               "-device", "virtserialport,chardev=agent,name=boxyard.agent"]
        vcpu_prefix = "CPU "
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        s = ready(sock, t0 + 120)
        wall = time.monotonic() - t0
        cpu = cpu_ms(p.pid, vcpu_prefix)
        rss = rss_beyond_guest_kib(p.pid)
        s.close()
    finally:
        p.kill(); p.wait()
    return wall, cpu, rss

results = {"vmm": [], "qemu": []}
for i in range(runs):
    for kind in ("vmm", "qemu"):
        r = one(kind, i)
        results[kind].append(r)
        print(f"{kind:5} run {i}: agent READY after {r[0]:.3f} s, monitor CPU {r[1]:.0f} ms, RSS beyond guest RAM {r[2]/1024:.1f} MiB", flush=True)
for kind, rs in results.items():
    print(f"{kind:5} median: READY {statistics.median(r[0] for r in rs):.3f} s, "
          f"CPU {statistics.median(r[1] for r in rs):.0f} ms, RSS+ {statistics.median(r[2] for r in rs)/1024:.1f} MiB")
med = {k: [statistics.median(r[j] for r in rs) for j in range(3)] for k, rs in results.items()}
print(f"ratio boxyard-vmm / QEMU (medians): READY {med['vmm'][0] / med['qemu'][0]:.2f}x, "
      f"monitor CPU {med['vmm'][1] / max(med['qemu'][1], 1e-9):.2f}x, RSS+ {med['vmm'][2] / max(med['qemu'][2], 1):.2f}x; "
      f"L1 load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}")
PY

if [ -n "$runner" ]; then
  [ -x "$runner" ] || { echo "bench-vmm: no runner binary at $runner" >&2; exit 2; }
  echo "exec round trip through the runner's backends ($runner), $execs executions of true after one boot each:"
  for backend in kvm qemu; do
    extra=()
    [ "$backend" = kvm ] && extra=(--vmm-binary "$vmm")
    [ "$backend" = qemu ] && extra=(--accel kvm)
    "$runner" vm bench --backend "$backend" "${extra[@]}" --guest-dir "$guest" --rootfs "$rootfs" \
      --boots 1 --execs "$execs" --boot-timeout 120 2>&1 | sed "s/^/  $backend: /"
  done
fi
