#!/usr/bin/env bash
# Measures boxyard-vmm's start-up, process start to the boot vCPU's first guest instruction (CPU-ms and wall), beside
# baselines taken in the same run, interleaved, so a noisy machine shifts them together:
#   true          the cost of starting any process (fork + exec + exit of /bin/true; CPU from wait4's rusage)
#   kvm floor     vmm/examples/start_floor: memfd RAM, KVM_CREATE_VM, one memslot, one vCPU, first KVM_RUN
#   kvm+load      the same, also copying the kernel and initramfs into the memfd (sendfile, as the VMM loads them)
#   boxyard-vmm   --timing, with two disks, the agent socket and virtio-rng, as the runner starts it
#   --compare PATH  optionally a second boxyard-vmm build (e.g. the previous commit's), measured the same way
# and prints medians and p90s, the VMM's own cost above each floor, and the VMM's phase breakdown (median per phase).
# Any /dev/kvm that can enter a guest will do: the host's software KVM here (the guest never finishes booting on it,
# and does not have to: the VMM is killed once it reports the first entry), or real KVM.
#   scripts/bench-vmm-start.sh [--runs N] [--vmm PATH] [--compare PATH] [--floor PATH] [--kernel F] [--initramfs F]
# Defaults: 20 runs, $CARGO_TARGET_DIR/release/{boxyard-vmm,examples/start_floor}, build/guest/current/*.
#   cargo build --release -p boxyard-vmm --bin boxyard-vmm --example start_floor
set -euo pipefail

repo="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
runs=20
vmm="$target/release/boxyard-vmm"
floor="$target/release/examples/start_floor"
compare=""
kernel="$repo/build/guest/current/vmlinuz"
initramfs="$repo/build/guest/current/initramfs.cpio"
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --vmm) vmm="$2"; shift 2 ;;
    --compare) compare="$2"; shift 2 ;;
    --floor) floor="$2"; shift 2 ;;
    --kernel) kernel="$2"; shift 2 ;;
    --initramfs) initramfs="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "bench-vmm-start: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -c /dev/kvm ] || { echo "bench-vmm-start: no /dev/kvm" >&2; exit 2; }
for f in "$vmm" "$floor" ${compare:+"$compare"}; do
  [ -x "$f" ] || { echo "bench-vmm-start: no $f (cargo build --release -p boxyard-vmm --bin boxyard-vmm --example start_floor)" >&2; exit 2; }
done
for f in "$kernel" "$initramfs"; do [ -r "$f" ] || { echo "bench-vmm-start: no $f" >&2; exit 2; }; done
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

exec python3 - "$runs" "$vmm" "$floor" "$(readlink -f "$kernel")" "$(readlink -f "$initramfs")" "$work" "$compare" <<'PY'
import os, re, statistics, subprocess, sys, time
runs, vmm, floor, kernel, initramfs, work, compare = int(sys.argv[1]), *sys.argv[2:]
ENTRY = re.compile(r"first guest entry .*\(([\d.]+) CPU-ms since process start; at monotonic ([\d.]+) ms\)")
PHASE = re.compile(r"timing: (.+?)\s+([\d.]+) ms wall\s+([\d.]+) CPU-ms")
MAIN = re.compile(r"main\(\) entered with ([\d.]+) CPU-ms")
for name in ("ro.img", "rw.img"):
    with open(os.path.join(work, name), "wb") as f: f.truncate(64 << 20)

def run_true():
    t0 = time.monotonic()
    pid = os.spawnv(os.P_NOWAIT, "/bin/true", ["true"])
    _, _, ru = os.wait4(pid, 0)
    return (ru.ru_utime + ru.ru_stime) * 1e3, (time.monotonic() - t0) * 1e3

def run_entry(cmd, phases=None):
    """Runs cmd until it prints a first-entry line; returns (CPU-ms, wall ms from spawn)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in p.stdout:
            if phases is not None:
                if m := PHASE.search(line): phases.setdefault(m[1], []).append(float(m[3]))
                if m := MAIN.search(line): phases.setdefault("(before main: exec, ld.so)", []).append(float(m[1]))
            if m := ENTRY.search(line):
                return float(m[1]), float(m[2]) - t0 * 1e3
        raise RuntimeError(f"no first-entry line from {cmd[0]}")
    finally:
        p.kill(); p.wait(); p.stdout.close()

vmm_args = ["--kernel", kernel, "--initramfs", initramfs, "--memory", "512",
           "--disk", f"{work}/ro.img,serial=boxyard-root,ro", "--disk", f"{work}/rw.img,serial=boxyard-rw",
           "--agent-socket", f"{work}/agent.sock", "--console-log", "/dev/null", "--timing"]
kinds = {
    "true": run_true,
    "kvm floor": lambda: run_entry([floor]),
    "kvm+load floor": lambda: run_entry([floor, "--load", kernel, "--load", initramfs]),
}
phases, compare_phases = {}, {}
if compare:
    kinds["compared vmm"] = lambda: run_entry([compare] + vmm_args, compare_phases)
kinds["boxyard-vmm"] = lambda: run_entry([vmm] + vmm_args, phases)
res = {k: [] for k in kinds}
for _ in range(runs):
    for k, f in kinds.items():
        res[k].append(f())

def p90(xs):
    xs = sorted(xs); return xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]
size = (os.path.getsize(kernel) + os.path.getsize(initramfs)) / 2**20
print(f"start-up to first guest instruction, {runs} interleaved runs, kernel+initramfs {size:.1f} MiB, "
      f"load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}")
print(f"{'':16} {'CPU-ms med':>10} {'p90':>7} {'wall ms med':>11} {'p90':>7}")
for k, rs in res.items():
    c, w = [r[0] for r in rs], [r[1] for r in rs]
    print(f"{k:16} {statistics.median(c):10.2f} {p90(c):7.2f} {statistics.median(w):11.2f} {p90(w):7.2f}")
v = statistics.median(r[0] for r in res["boxyard-vmm"])
for k in ("kvm floor", "kvm+load floor") + (("compared vmm",) if compare else ()):
    f = statistics.median(r[0] for r in res[k])
    print(f"boxyard-vmm above {k}: {v - f:+.2f} CPU-ms (median difference)")
print(f"phases (median CPU-ms){'':8} {'boxyard-vmm':>11}" + (f" {'compared':>9}" if compare else ""))
for name in dict.fromkeys(list(phases) + list(compare_phases)):
    line = f"  {name:34} {statistics.median(phases[name]) if name in phases else float('nan'):9.2f}"
    if compare:
        line += f" {statistics.median(compare_phases[name]) if name in compare_phases else float('nan'):9.2f}"
    print(line)
PY
