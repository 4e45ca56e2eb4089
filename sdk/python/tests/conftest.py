"""The tests run against a real stack with QEMU boxes.

With ``BOXYARD_URL`` and ``BOXYARD_KEY`` (a platform admin key) set, that stack is used (set
``BOXYARD_TEST_STACK_DIR`` to its ``boxyard dev`` directory to also run the runner-restart test). Otherwise the
session starts its own with ``boxyard dev up --dir <tmp>`` (the binaries from ``BOXYARD_BIN_DIR``, else
``${CARGO_TARGET_DIR:-<repo>/target}/debug``) and takes it down at the end.

Either way the tests work in an org of their own (created with the platform key, with an admin key), and delete its
boxes, snapshots and the org at the end.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import urlparse

import pytest

HERE = Path(__file__).resolve().parent
SDK_DIR = HERE.parent
REPO = SDK_DIR.parent.parent

sys.path.insert(0, str(HERE))

import boxyard  # noqa: E402
from proxy import CuttingProxy  # noqa: E402

# One line per HTTP request is too much in failure reports; the SDK's own retry logs stay.
logging.getLogger("httpx").setLevel(logging.WARNING)


def bin_dir() -> Path:
    d = os.environ.get("BOXYARD_BIN_DIR")
    if d:
        return Path(d)
    target = os.environ.get("CARGO_TARGET_DIR") or str(REPO / "target")
    return Path(target) / "debug"


@dataclass
class Stack:
    url: str
    platform_key: str
    # The `boxyard dev` directory, when known (runner.pid lives there).
    dir: Optional[Path]
    config_home: Optional[Path]

    def dev(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Runs `boxyard dev ARGS --dir <dir>` from the repository root."""
        assert self.dir is not None
        env = dict(os.environ, BOXYARD_BIN_DIR=str(bin_dir()))
        if self.config_home is not None:
            env["XDG_CONFIG_HOME"] = str(self.config_home)
        return subprocess.run(
            [str(bin_dir() / "boxyard"), "dev", *args, "--dir", str(self.dir)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    url, key = os.environ.get("BOXYARD_URL"), os.environ.get("BOXYARD_KEY")
    if url and key:
        d = os.environ.get("BOXYARD_TEST_STACK_DIR")
        yield Stack(url.rstrip("/"), key, Path(d) if d else None, None)
        return
    exe = bin_dir() / "boxyard"
    if not exe.is_file():
        pytest.exit(f"no {exe}: set BOXYARD_BIN_DIR (or BOXYARD_URL and BOXYARD_KEY)", returncode=2)
    # Under /var/tmp: PostgreSQL runs as its own user and must reach the directory (pytest's tmp dirs are 0700).
    root = Path(tempfile.mkdtemp(prefix="boxyard-pysdk-", dir="/var/tmp"))
    os.chmod(root, 0o711)
    st = Stack("", "", root / "stack", root / "config")
    t = time.monotonic()
    r = st.dev("up")
    if r.returncode != 0:
        st.dev("down")
        pytest.exit(f"boxyard dev up failed:\n{r.stderr[-3000:]}", returncode=2)
    prof = json.loads((root / "config" / "boxyard" / "profiles.json").read_text())["profiles"]["dev"]
    st.url, st.platform_key = prof["url"], prof["key"]
    print(f"\n[stack] boxyard dev up took {time.monotonic() - t:.1f} s: {st.url}", file=sys.stderr)
    try:
        yield st
    finally:
        st.dev("down")
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Org:
    id: str
    name: str
    key: str
    url: str


@pytest.fixture(scope="session")
def platform(stack: Stack) -> Iterator[boxyard.Client]:
    with boxyard.Client(stack.url, stack.platform_key) as c:
        if c.me().role != "platform_admin":
            pytest.exit("BOXYARD_KEY must be a platform admin key (the tests create an org of their own)", returncode=2)
        yield c


@pytest.fixture(scope="session")
def org(platform: boxyard.Client, stack: Stack) -> Iterator[Org]:
    name = f"pysdk-{uuid.uuid4().hex[:10]}"
    o = platform.admin.create_org(name)
    k = platform.admin.create_org_key(o.id, "pysdk-tests", role="admin")
    assert k.secret
    yield Org(o.id, name, k.secret, stack.url)
    # Clean up what the tests made: boxes, snapshots, then the org.
    with boxyard.Client(stack.url, k.secret) as c:
        for b in list(c.boxes.list()):
            try:
                b.delete()
            except boxyard.NotFoundError:
                pass
        for s in c.snapshots.list():
            if s.org_id == o.id:
                try:
                    c.snapshots.delete(s.id)
                except boxyard.ApiError as e:
                    print(f"[cleanup] snapshot {s.name}: {e}", file=sys.stderr)
    deadline = time.monotonic() + 30
    while True:
        try:
            platform.admin.delete_org(o.id)
            break
        except boxyard.ConflictError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="session")
def client(org: Org) -> Iterator[boxyard.Client]:
    with boxyard.Client(org.url, org.key) as c:
        yield c


@pytest.fixture(scope="session")
def box(client: boxyard.Client) -> Iterator[boxyard.Box]:
    """One running box shared by the tests that only run commands in it."""
    with client.boxes.create("base", labels={"pysdk": "shared"}, name="pysdk-shared") as b:
        yield b


@pytest.fixture
async def aclient(org: Org) -> "object":
    async with boxyard.AsyncClient(org.url, org.key) as c:
        yield c


@pytest.fixture
def proxy(stack: Stack) -> Iterator[CuttingProxy]:
    u = urlparse(stack.url)
    p = CuttingProxy(u.hostname or "127.0.0.1", u.port or 80, seed=int(os.environ.get("PYSDK_PROXY_SEED", "0")) or None)
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def proxied(proxy: CuttingProxy, org: Org) -> Iterator[boxyard.Client]:
    """A client of the org whose every connection goes through the proxy."""
    with boxyard.Client(proxy.url, org.key) as c:
        yield c
