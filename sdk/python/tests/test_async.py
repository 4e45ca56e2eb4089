"""The asyncio client's public methods against a running stack with QEMU boxes."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import List

import pytest

import boxyard
from conftest import REPO, Org

ROOTFS = REPO / "build" / "rootfs" / "busybox.ext4"


async def test_me_config_and_get(aclient: boxyard.AsyncClient, org: Org, box: boxyard.Box) -> None:
    assert (await aclient.me()).org_id == org.id
    assert (await aclient.config()).quota.max_boxes > 0
    b = await aclient.boxes.get(box.id)
    assert b.id == box.id and b.state == "running" and (await b.refresh()) is b


async def test_run_and_callbacks(aclient: boxyard.AsyncClient, box: boxyard.Box) -> None:
    b = await aclient.boxes.get(box.id)
    out: List[str] = []
    r = await b.run("echo hello; echo oops >&2; exit 3", on_stdout=out.append)
    assert (r.stdout, r.stderr, r.exit_code) == ("hello\n", "oops\n", 3) and "".join(out) == "hello\n"
    r = await b.run(["cat"], stdin="in ✓", env={"A": "1"}, cwd="/tmp", user="0", timeout=30)
    assert r.stdout == "in ✓" and r.ok
    r = await b.run(["sleep", "30"], timeout=0.5)
    assert r.timed_out
    big = os.urandom(8 << 20)
    r = await b.run(["head", "-c", "10"], stdin=big)  # the process stops reading: the runner refuses the rest
    assert r.exit_code == 0 and r.stdout_bytes == big[:10]


async def test_exec_iteration_input_signal_kill_resize(aclient: boxyard.AsyncClient, box: boxyard.Box) -> None:
    b = await aclient.boxes.get(box.id)
    ex = await b.exec(["sh", "-c", 'while read l; do echo "got $l"; done'], stdin=True)
    await ex.send_stdin("one\n")
    await ex.send_stdin(b"two\n")
    await ex.close_stdin()
    chunks = [c async for c in ex]
    assert b"".join(c.data for c in chunks) == b"got one\ngot two\n"
    assert ex.finished and (await ex.wait()).exit_code == 0
    with pytest.raises(boxyard.ConflictError) as e:
        await ex.send_stdin("late")
    assert e.value.code == "execution_finished"

    ex = await b.exec(["sleep", "30"])
    await asyncio.sleep(0.3)
    await ex.signal("INT")
    assert (await ex.wait(timeout=30)).signal == "SIGINT"
    ex = await b.exec(["sleep", "30"])
    await ex.kill()
    assert (await ex.wait(timeout=30)).killed
    ex = await b.exec(["sh", "-c", "stty size; read x; stty size"], tty=boxyard.TtySize(rows=20, cols=70), stdin=True)
    first = await ex.__anext__()
    assert b"20 70" in first.data
    await ex.resize(25, 75)
    await ex.send_stdin("\n")
    assert "25 75" in (await ex.wait(timeout=30)).stdout
    with pytest.raises(boxyard.WaitTimeout):
        await (await b.exec(["sleep", "5"])).wait(timeout=0.3)


async def test_execution_from_a_cursor_and_list(aclient: boxyard.AsyncClient, box: boxyard.Box) -> None:
    b = await aclient.boxes.get(box.id)
    r = await b.run("seq 1 1000")
    expected = b"".join(b"%d\n" % i for i in range(1, 1001))
    assert r.stdout_bytes == expected
    h = await b.execution(r.execution_id, cursor=500)
    assert (await h.wait()).stdout_bytes == expected[500:]
    assert (await h.refresh()).state == "finished"
    ids = [e.id async for e in b.executions(page_size=3)]
    assert r.execution_id in ids and len(ids) == len(set(ids))
    states = [e.state async for e in b.executions(state="finished")]
    assert states and set(states) == {"finished"}


async def test_files(aclient: boxyard.AsyncClient, box: boxyard.Box, tmp_path: Path) -> None:
    b = await aclient.boxes.get(box.id)
    blob = os.urandom(2 << 20)
    await b.files.write("/tmp/apysdk/blob.bin", blob)
    assert await b.files.read("/tmp/apysdk/blob.bin") == blob
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("deep")
    (src / "big.bin").write_bytes(blob)
    up = await b.files.upload(src, "/tmp/apysdk")
    assert up.entries == 4
    written = await b.files.download("/tmp/apysdk/tree", tmp_path / "down")
    assert (tmp_path / "down" / "tree" / "sub" / "f.txt").read_text() == "deep"
    assert (tmp_path / "down" / "tree" / "big.bin").read_bytes() == blob
    assert len(written) == 4
    with pytest.raises(IsADirectoryError):
        await b.files.read("/tmp/apysdk")


async def test_lifecycle_and_list(aclient: boxyard.AsyncClient, box: boxyard.Box) -> None:
    async with aclient.boxes.create(labels={"pysdk": "async-lifecycle"}, wait=False) as b:
        await b.wait_until_running(timeout=180)
        assert [x.id async for x in aclient.boxes.list(label="pysdk=async-lifecycle")] == [b.id]
        ids = [x.id async for x in aclient.boxes.list(page_size=1, state="running")]
        assert b.id in ids and box.id in ids
        assert (await b.stop()).state == "stopped"
        with pytest.raises(boxyard.ConflictError):
            await b.exec(["true"])
        assert (await b.start()).state == "running"
        assert (await b.run("echo again")).stdout == "again\n"
    with pytest.raises(boxyard.NotFoundError):
        await aclient.boxes.get(b.id)
    b2 = await aclient.boxes.create()
    await b2.delete()
    with pytest.raises(boxyard.NotFoundError):
        await b2.delete()


async def test_keys(aclient: boxyard.AsyncClient, org: Org) -> None:
    k = await aclient.keys.create("apysdk", role="member")
    assert k.secret and k.id in [x.id for x in await aclient.keys.list()]
    assert (await aclient.keys.revoke(k.id)).revoked_at is not None
    async with boxyard.AsyncClient(org.url, k.secret) as revoked:
        with pytest.raises(boxyard.UnauthorizedError):
            await revoked.me()


@pytest.mark.skipif(not ROOTFS.is_file(), reason=f"no image at {ROOTFS}")
async def test_snapshots(aclient: boxyard.AsyncClient) -> None:
    s = await aclient.snapshots.create("apysdk-snap", metadata={"cmd": ["true"], "working_dir": "/tmp"})
    assert s.metadata.working_dir == "/tmp"
    seen: List[int] = []
    with open(ROOTFS, "rb") as f:
        active = await aclient.snapshots.upload_image(s.id, f, on_progress=lambda sent, total: seen.append(sent))
    assert active.state == "active" and active.digest == "sha256:" + hashlib.sha256(ROOTFS.read_bytes()).hexdigest()
    assert seen[-1] == ROOTFS.stat().st_size
    assert (await aclient.snapshots.get(s.id)).name == "apysdk-snap"
    assert s.id in [x.id for x in await aclient.snapshots.list()]
    await aclient.snapshots.delete(s.id)
    with pytest.raises(boxyard.NotFoundError):
        await aclient.snapshots.get(s.id)
