"""The round-trip overhead of ``box.run(["true"])`` through the Python SDK: the median of N runs on one box.

Each run is what ``box.run`` always does: create the execution (POST, with an Idempotency-Key), attach over a new
WebSocket, read to the exit message. The box is created first (not timed) and deleted at the end.

    cargo build --release -p boxyard-sdk --example run_overhead   # the baseline, once
    python bench/run_overhead.py                 # 50 runs beside the Rust SDK's, a table
    python bench/run_overhead.py --json          # one JSON object on stdout
    python bench/run_overhead.py --runs 200 --box-id <id>

The Rust SDK's example ``run_overhead`` (``--rust``, default ``${CARGO_TARGET_DIR:-target}/release/examples/
run_overhead``) runs on the same box in the same run, interleaved with the Python runs in rounds (the machine's
noise hits both alike), and the ratio of the medians is printed: the figure to compare with the target (Python
≤ 1.3× Rust). Without that binary the benchmark stops and says how to build it; ``--no-baseline`` measures the
Python SDK alone.

Credentials: --url/--key, else BOXYARD_URL/BOXYARD_KEY, else the CLI's default profile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

import boxyard


def percentile(sorted_values: List[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def measure(box: boxyard.Box, runs: int, warmup: int) -> List[float]:
    for _ in range(warmup):
        r = box.run(["true"])
        if r.exit_code != 0:
            raise SystemExit(f"`true` exited with {r.exit_code} ({r.error})")
    times: List[float] = []
    for _ in range(runs):
        t = time.perf_counter()
        r = box.run(["true"])
        times.append(time.perf_counter() - t)
        if r.exit_code != 0:
            raise SystemExit(f"`true` exited with {r.exit_code} ({r.error})")
    return times


def measure_rust(binary: str, url: str, key: str, box_id: str, runs: int) -> List[float]:
    """`runs` round trips through the Rust SDK's example on the same box, in seconds."""
    out = subprocess.run([binary, url, key, box_id, str(runs)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"the Rust example failed ({out.returncode}): {out.stderr.strip()}")
    return [float(ms) / 1000 for ms in json.loads(out.stdout)["samples_ms"]]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50, help="timed runs (default 50)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--url", help="the API URL (default: BOXYARD_URL, else the CLI profile)")
    ap.add_argument("--key", help="an API key (default: BOXYARD_KEY, else the CLI profile)")
    ap.add_argument("--box-id", help="use this running box instead of creating one")
    ap.add_argument("--snapshot", default=None, help="snapshot of the box to create (default: the runners' image)")
    ap.add_argument("--rust", metavar="BIN", help="the Rust SDK's run_overhead example, measured beside (see above)")
    ap.add_argument("--no-baseline", action="store_true", help="measure the Python SDK alone (no ratio)")
    ap.add_argument("--rounds", type=int, default=5, help="with --rust: interleaved rounds (default 5)")
    a = ap.parse_args(argv)
    if a.runs < 1:
        ap.error("--runs must be at least 1")
    if a.rust is None and not a.no_baseline:
        repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(repo, "target")
        a.rust = os.path.join(target, "release", "examples", "run_overhead")
        if not os.path.isfile(a.rust):
            ap.error(
                f"no Rust SDK baseline at {a.rust}: build it with `cargo build --release -p boxyard-sdk --example "
                "run_overhead`, pass --rust BIN, or --no-baseline to measure the Python SDK alone"
            )

    with boxyard.Client(a.url, a.key) as client:
        created = a.box_id is None
        box = (
            client.boxes.create(a.snapshot, labels={"bench": "run_overhead"}) if created else client.boxes.get(a.box_id)
        )
        try:
            rust_times: List[float] = []
            if a.rust:
                times = []
                per_round = max(1, a.runs // a.rounds)
                measure(box, 0, a.warmup)
                for _ in range(a.rounds):
                    rust_times += measure_rust(a.rust, client.url, client._key, box.id, per_round)
                    times += measure(box, per_round, 0)
            else:
                times = measure(box, a.runs, a.warmup)
        finally:
            if created:
                box.delete()

    ordered = sorted(times)
    ms = [t * 1000 for t in ordered]
    out: Dict[str, Any] = {
        "benchmark": "python_sdk_run_true",
        "sdk": f"boxyard-python {boxyard.__version__}",
        "python": platform.python_version(),
        "api": client.url,
        "runs": a.runs,
        "warmup": a.warmup,
        "median_ms": round(statistics.median(ms), 3),
        "mean_ms": round(statistics.fmean(ms) if hasattr(statistics, "fmean") else statistics.mean(ms), 3),
        "p10_ms": round(percentile(ms, 0.10), 3),
        "p90_ms": round(percentile(ms, 0.90), 3),
        "min_ms": round(ms[0], 3),
        "max_ms": round(ms[-1], 3),
        "stdev_ms": round(statistics.stdev(ms), 3) if len(ms) > 1 else 0.0,
        "samples_ms": [round(t * 1000, 3) for t in times],
    }
    if rust_times:
        rust_median = statistics.median(t * 1000 for t in rust_times)
        out["rust_median_ms"] = round(rust_median, 3)
        out["rust_runs"] = len(rust_times)
        out["ratio_python_to_rust"] = round(out["median_ms"] / rust_median, 3)
    if a.json:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(f"box.run(['true']) through the Python SDK, {a.runs} runs (after {a.warmup} warm-up) on one box")
        print(f"  API     {out['api']}   Python {out['python']}   {out['sdk']}")
        for k in ("median_ms", "mean_ms", "p10_ms", "p90_ms", "min_ms", "max_ms", "stdev_ms"):
            print(f"  {k[:-3]:<7} {out[k]:9.3f} ms")
        if rust_times:
            print(f"  Rust SDK median {out['rust_median_ms']:.3f} ms over {out['rust_runs']} runs, same box, interleaved")
            print(f"  Python / Rust   {out['ratio_python_to_rust']:.3f}x (target <= 1.3x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
