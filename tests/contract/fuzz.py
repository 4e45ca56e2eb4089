"""Property-based fuzzing of a live Boxyard API with schemathesis, and clean-up of everything it made.

Run by scripts/fuzz-api.sh (which sets up the pinned tools and, unless given one, a local stack). Two runs, each with
every phase (examples, coverage, fuzzing, stateful), a fixed seed and a time budget:

1. with an org admin key of an org made for the run: every operation outside `/v1/admin`;
2. with the platform key: the `/v1/admin` operations.

Checks: every built-in check of schemathesis except `not_a_server_error` and `positive_data_acceptance`, which
hooks.py replaces with exact ones (no 5xx but a 503 with `retry_after`; schema-valid data refused only for rules
that depend on stored state), plus the API's error body with the request id on every error. Any finding fails.

Afterwards it deletes what the runs made (boxes, snapshots and keys of the run's org, then the org; orgs and join
tokens the platform run made; the platform org's quota and the runners' cordons as they were) and checks that
nothing is left. Exit status: 0 with no finding and a clean stack, 1 otherwise.
"""

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


class Api:
    def __init__(self, url, key):
        self.url, self.key = url.rstrip("/"), key

    def call(self, method, path, body=None, ok=(200, 201, 202, 204)):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.key}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        if status not in ok:
            raise RuntimeError(f"{method} {path}: {status} {raw[:300]!r}")
        return json.loads(raw) if raw else None

    def items(self, path):
        out, cursor = [], None
        while True:
            sep = "&" if "?" in path else "?"
            page = self.call("GET", path + (f"{sep}cursor={cursor}" if cursor else ""))
            out += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return out


def schemathesis(args, url, key, include, label, report_dir):
    """One schemathesis run; returns True when it found nothing."""
    venv_bin = Path(sys.executable).parent
    cmd = [
        str(venv_bin / "schemathesis"), "run", f"{url}/v1/openapi.json", "--url", url,
        "-H", f"Authorization: Bearer {key}",
        "--checks", "all", "--exclude-checks", "not_a_server_error,positive_data_acceptance",
        "--phases", "examples,coverage,fuzzing,stateful",
        # One worker: CPython 3.11's ast module is not thread-safe ("AST constructor recursion depth mismatch"
        # from hypothesis parsing lambdas in two threads at once), which made a run fail now and then.
        "--seed", str(args.seed), "--max-time", str(args.budget), "--workers", "1",
        "--request-timeout", "60", "--suppress-health-check", "all", "--no-color",
        "--report", "junit", "--report-dir", str(report_dir / label),
    ] + include
    env = dict(os.environ, SCHEMATHESIS_HOOKS="hooks", PYTHONPATH=str(HERE))
    print(f"==> schemathesis ({label}): seed {args.seed}, budget {args.budget} s", flush=True)
    started = time.monotonic()
    # Its cache (.schemathesis/) goes beside the reports, not into the checkout.
    (report_dir / label).mkdir(parents=True, exist_ok=True)
    rc = subprocess.run(cmd, env=env, cwd=report_dir / label).returncode
    print(f"==> schemathesis ({label}): exit {rc} after {time.monotonic() - started:.0f} s", flush=True)
    return rc == 0


def wait_gone(api, org_boxes_path, deadline_s=180):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        left = [b for b in api.items(org_boxes_path)]
        if not left:
            return []
        time.sleep(1)
    return left


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True, help="a platform admin key")
    p.add_argument("--seed", type=int, default=20261201)
    p.add_argument("--budget", type=int, default=120, help="seconds per run")
    p.add_argument("--report-dir", type=Path, default=Path("schemathesis-report"))
    args = p.parse_args()
    args.report_dir = args.report_dir.resolve()
    platform = Api(args.url, args.key)
    failures = []

    # What exists before, to tell what the runs made.
    orgs_before = {o["id"] for o in platform.call("GET", "/v1/admin/orgs")["items"]}
    tokens_before = {t["id"] for t in platform.call("GET", "/v1/admin/join-tokens")["items"]}
    me = platform.call("GET", "/v1/me")
    platform_quota = platform.call("GET", f"/v1/admin/orgs/{me['org_id']}")["quota"]
    runners_before = {r["id"]: r for r in platform.call("GET", "/v1/admin/runners")["items"]}

    # 1. An org of its own, with an admin key.
    org = platform.call("POST", "/v1/admin/orgs", {"name": f"fuzz-{secrets.token_hex(4)}"})
    admin_key = platform.call("POST", f"/v1/admin/orgs/{org['id']}/keys", {"name": "fuzz", "role": "admin"})
    admin = Api(args.url, admin_key["secret"])
    if not schemathesis(args, args.url, admin.key, ["--exclude-path-regex", "^/v1/admin"], "org-admin", args.report_dir):
        failures.append("schemathesis found problems with the org admin key (see above)")

    # Clean up the org: boxes, snapshots, then the org itself (which revokes its keys).
    for b in admin.items("/v1/boxes"):
        admin.call("DELETE", f"/v1/boxes/{b['id']}", ok=(204, 404))
    left = wait_gone(admin, "/v1/boxes")
    if left:
        failures.append(f"boxes of the fuzz org still there after deletion: {[b['id'] for b in left]}")
    for s in admin.call("GET", "/v1/snapshots")["items"]:
        if s["org_id"] == org["id"]:
            admin.call("DELETE", f"/v1/snapshots/{s['id']}", ok=(204, 404))
    platform.call("DELETE", f"/v1/admin/orgs/{org['id']}")

    # 2. The admin routes with the platform key.
    # Removing a runner is left out: it would remove the stack's only runner, which nothing here can put back
    # (tests/fleet.rs covers it).
    platform_ops = ["--include-path-regex", "^/v1/admin", "--exclude-operation-id", "admin_delete_runner"]
    if not schemathesis(args, args.url, args.key, platform_ops, "platform", args.report_dir):
        failures.append("schemathesis found problems with the platform key (see above)")

    # Clean up what the platform run made or changed.
    for o in platform.call("GET", "/v1/admin/orgs")["items"]:
        if o["id"] not in orgs_before:
            platform.call("DELETE", f"/v1/admin/orgs/{o['id']}", ok=(204, 404))
    for t in platform.call("GET", "/v1/admin/join-tokens")["items"]:
        if t["id"] not in tokens_before and not t["revoked_at"]:
            platform.call("DELETE", f"/v1/admin/join-tokens/{t['id']}", ok=(200, 404))
    platform.call("PUT", f"/v1/admin/orgs/{me['org_id']}/quota", platform_quota)
    for r in platform.call("GET", "/v1/admin/runners")["items"]:
        before = runners_before.get(r["id"])
        if before and not before["cordoned"] and not before["draining"] and (r["cordoned"] or r["draining"]):
            platform.call("POST", f"/v1/admin/runners/{r['id']}/uncordon")

    # Nothing left behind.
    orgs_after = {o["id"] for o in platform.call("GET", "/v1/admin/orgs")["items"]}
    if orgs_after != orgs_before:
        failures.append(f"orgs left behind: {orgs_after - orgs_before}")
    live_tokens = {t["id"] for t in platform.call("GET", "/v1/admin/join-tokens")["items"] if not t["revoked_at"]}
    if live_tokens - tokens_before:
        failures.append(f"join tokens left behind: {live_tokens - tokens_before}")
    try:
        admin.call("GET", "/v1/me")
        failures.append("the fuzz org's key still works after the org was deleted")
    except RuntimeError as e:
        if ": 401 " not in str(e):
            failures.append(f"the fuzz org's key: {e}")

    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    print("==> API fuzzing:", "clean" if not failures else f"{len(failures)} problem(s)", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
