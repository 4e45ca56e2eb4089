"""The OpenAPI document is usable, not only valid: a client generated from the live /v1/openapi.json by a standard
generator (openapi-python-client, pinned in requirements.txt) compiles, then creates a box, runs an execution to its
result and lists boxes page by page with `limit`, against a real stack with a real VM.

Run by scripts/fuzz-api.sh: python generated_client.py --url URL --key KEY --work DIR. Exit status 0 on success.
"""

import argparse
import compileall
import importlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def generate(url, work):
    work.mkdir(parents=True, exist_ok=True)
    spec = work / "openapi.json"
    with urllib.request.urlopen(f"{url}/v1/openapi.json", timeout=30) as r:
        spec.write_bytes(r.read())
    out = work / "boxyard_generated"
    gen = Path(sys.executable).parent / "openapi-python-client"
    cmd = [str(gen), "generate", "--path", str(spec), "--meta", "none", "--output-path", str(out), "--overwrite"]
    # Its post-generation hook (ruff) comes from the same virtualenv.
    env = dict(os.environ, PATH=f"{gen.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    print(result.stdout[-2000:], result.stderr[-2000:], sep="\n")
    if result.returncode != 0:
        raise SystemExit(f"openapi-python-client failed ({result.returncode})")
    # Every endpoint the document has must be generated (the generator skips those it cannot describe).
    if "Endpoint will not be generated" in result.stdout + result.stderr:
        raise SystemExit("openapi-python-client left endpoints out (see its warnings above)")
    if not compileall.compile_dir(str(out), quiet=1):
        raise SystemExit("the generated client does not compile")
    sys.path.insert(0, str(work))
    return importlib.import_module("boxyard_generated")


def expect(resp, status, what):
    if resp.status_code != status:
        raise SystemExit(f"{what}: expected {status}, got {resp.status_code}: {resp.content[:500]!r}")
    return resp.parsed


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--work", type=Path, required=True)
    args = p.parse_args()

    pkg = generate(args.url, args.work)
    import httpx

    from boxyard_generated.api.boxes import boxes_create, boxes_delete, boxes_list
    from boxyard_generated.api.executions import executions_create, executions_get
    from boxyard_generated.models import BoxState, CreateBox, CreateExecution, ExecutionState

    client = pkg.AuthenticatedClient(base_url=args.url, token=args.key, timeout=httpx.Timeout(600.0))
    made = []
    try:
        first = expect(
            boxes_create.sync_detailed(client=client, body=CreateBox(name="generated-client-1")), 201, "create a box"
        )
        made.append(first.id)
        assert first.state == BoxState.RUNNING, first.state
        print(f"box {first.id} runs")

        body = CreateExecution(command=["sh", "-c", "echo hello; exit 3"])
        x = expect(executions_create.sync_detailed(id=first.id, client=client, body=body), 201, "run an execution")
        deadline = time.monotonic() + 300
        while x.state == ExecutionState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.5)
            x = expect(executions_get.sync_detailed(id=first.id, eid=x.id, client=client), 200, "get the execution")
        assert x.state == ExecutionState.FINISHED, x.state
        assert x.exit_code == 3, x.exit_code
        assert x.output_bytes == len(b"hello\n"), x.output_bytes
        print(f"execution {x.id} exited 3 with 6 bytes of output")

        second = expect(
            boxes_create.sync_detailed(client=client, body=CreateBox(name="generated-client-2"), wait=False),
            202,
            "create a box without waiting",
        )
        made.append(second.id)
        # Page through every box one at a time: ours appear once each, in creation order.
        seen, cursor = [], None
        while True:
            kwargs = {"limit": 1} if cursor is None else {"limit": 1, "cursor": cursor}
            page = expect(boxes_list.sync_detailed(client=client, **kwargs), 200, "list boxes")
            assert len(page.items) <= 1, len(page.items)
            seen += [b.id for b in page.items]
            if not page.next_cursor:
                break
            cursor = page.next_cursor
        ours = [i for i in seen if i in made]
        assert ours == made, (ours, made)
        assert len(seen) == len(set(seen)), "a box appeared twice"
        print(f"listed {len(seen)} boxes one per page")
    finally:
        for bid in made:
            resp = boxes_delete.sync_detailed(id=bid, client=client)
            if resp.status_code not in (204, 404):
                print(f"deleting box {bid}: {resp.status_code}", file=sys.stderr)
    print("generated client: create, run, list with limit: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
