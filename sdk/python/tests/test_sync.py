"""The sync client's public methods against a running stack with QEMU boxes."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import List

import pytest

import boxyard
from conftest import REPO, Org

ROOTFS = REPO / "build" / "rootfs" / "busybox.ext4"


def test_me_and_config(client: boxyard.Client, org: Org) -> None:
    me = client.me()
    assert me.org_id == org.id and me.org_name == org.name and me.role == "admin"
    cfg = client.config()
    assert cfg.version and cfg.default_vcpus >= 1 and cfg.quota.max_boxes > 0
    assert client.request("GET", "/v1/me")["org_id"] == org.id
    with pytest.raises(boxyard.NotFoundError):
        client.request("GET", "/v1/no-such-endpoint")


def test_box_attributes_are_the_box_view(box: boxyard.Box) -> None:
    assert box.state == "running" and box.desired_state == "running"
    assert box.labels == {"pysdk": "shared"} and box.name == "pysdk-shared" and box.snapshot == "base"
    assert box.vcpus >= 1 and box.memory_mib >= 64 and box.created_at.tzinfo is not None
    assert box.refresh() is box and box.info.id == box.id


def test_run_collects_output_exit_code_and_callbacks(box: boxyard.Box) -> None:
    out: List[str] = []
    err: List[str] = []
    r = box.run("echo hello; echo oops >&2; exit 3", on_stdout=out.append, on_stderr=err.append)
    assert (r.stdout, r.stderr, r.exit_code, r.signal, r.timed_out) == ("hello\n", "oops\n", 3, None, False)
    assert "".join(out) == "hello\n" and "".join(err) == "oops\n"
    assert r.stdout_bytes == b"hello\n" and r.execution_id and not r.ok
    assert r.output_end == len(b"hello\noops\n")
    r = box.run(["printf", "%s|", "a b", "c"])
    assert r.stdout == "a b|c|" and r.ok


def test_run_decodes_characters_split_across_chunks(box: boxyard.Box) -> None:
    # The two bytes of "é" are written 300 ms apart: they arrive in two frames.
    got: List[str] = []
    r = box.run(r"printf '\303'; sleep 0.3; printf '\251\n'; printf '\377'", on_stdout=got.append)
    assert r.stdout_bytes == b"\xc3\xa9\n\xff"
    assert r.stdout == "é\n\ufffd"
    assert "".join(got) == "é\n\ufffd" and got[0] != "\ufffd"


def test_run_options_env_cwd_user_timeout_stdin(box: boxyard.Box) -> None:
    r = box.run("echo $FOO; pwd; id -u", env={"FOO": "bar"}, cwd="/tmp", user="1000")
    assert r.stdout.split() == ["bar", "/tmp", "1000"], r
    r = box.run(["sleep", "30"], timeout=0.5)
    assert r.timed_out and r.exit_code is None and r.signal in ("SIGTERM", "SIGKILL")
    r = box.run(["cat"], stdin="text in ✓")
    assert r.stdout == "text in ✓"
    r = box.run(["wc", "-c"], stdin=b"\x00\x01\x02")
    assert r.stdout.strip() == "3"
    r = box.run(["sh", "-c", "exit 0"])
    assert r.exit_code == 0 and r.stdout == ""
    r = box.run(["no-such-program"])
    assert r.exit_code != 0 or r.error


def test_exec_handle_streams_chunks_and_takes_input(box: boxyard.Box) -> None:
    ex = box.exec(["sh", "-c", 'while read l; do echo "got $l"; done; echo bye >&2'], stdin=True)
    assert ex.id and ex.box_id == box.id and ex.info is not None and ex.info.stdin
    ex.send_stdin("one\n")
    ex.send_stdin(b"two\n")
    ex.close_stdin()
    chunks = list(ex)
    data = b"".join(c.data for c in chunks if c.stream == "stdout")
    assert data == b"got one\ngot two\n"
    assert [c for c in chunks if c.stream == "stderr"][-1].data.endswith(b"bye\n")
    # Cursors are contiguous.
    pos = 0
    for c in chunks:
        assert c.cursor == pos
        pos = c.end
    assert ex.finished and ex.cursor == pos
    res = ex.wait()  # everything was taken by the iteration
    assert res.exit_code == 0 and res.stdout == "" and res.output_end == pos
    assert ex.refresh().state == "finished"


def test_exec_reading_and_writing_from_two_threads(box: boxyard.Box) -> None:
    ex = box.exec(["cat"], stdin=True)
    payload = os.urandom(300_000)

    def writer() -> None:
        for i in range(0, len(payload), 7000):
            ex.send_stdin(payload[i : i + 7000])
        ex.close_stdin()

    t = threading.Thread(target=writer)
    t.start()
    res = ex.wait(timeout=60)
    t.join()
    assert res.stdout_bytes == payload


def test_input_to_a_process_that_stops_reading(box: boxyard.Box) -> None:
    big = os.urandom(8 << 20)
    r = box.run(["head", "-c", "10"], stdin=big, timeout=60)
    assert r.exit_code == 0 and r.stdout_bytes == big[:10]
    # Nobody reads the output while the input waits for room: the end of the process surfaces as the API's code
    # for a finished execution (or all input was taken before it ended), never as a hang.
    ex = box.exec(["head", "-c", "10"], stdin=True)
    t = time.monotonic()
    try:
        for _ in range(20):
            ex.send_stdin(big[: 1 << 20])
    except boxyard.ConflictError as e:
        assert e.code == "execution_finished"
    assert time.monotonic() - t < 60
    assert ex.wait(timeout=60).stdout_bytes == big[:10]


def test_wait_timeout_leaves_the_handle_usable(box: boxyard.Box) -> None:
    ex = box.exec("echo start; sleep 2; echo end")
    with pytest.raises(boxyard.WaitTimeout):
        ex.wait(timeout=0.5)
    res = ex.wait(timeout=30)
    assert res.stdout == "start\nend\n" and res.exit_code == 0


def test_signal_kill_and_resize(box: boxyard.Box) -> None:
    ex = box.exec(["sleep", "30"])
    time.sleep(0.3)
    ex.signal("TERM")
    res = ex.wait(timeout=30)
    assert res.signal == "SIGTERM" and not res.killed
    ex = box.exec(["sleep", "30"])
    info = ex.kill()
    assert info.id == ex.id
    res = ex.wait(timeout=30)
    assert res.killed and res.signal == "SIGKILL"
    ex = box.exec(["sh", "-c", "stty size; read x; stty size"], tty=(30, 90), stdin=True)
    first = next(iter(ex))
    assert b"30 90" in first.data
    ex.resize(40, 100)
    ex.send_stdin("\n")
    res = ex.wait(timeout=30)
    assert "40 100" in res.stdout
    with pytest.raises(boxyard.ConflictError) as e:
        box.exec(["true"]).resize(10, 10)  # no tty
    assert e.value.code in ("failed_precondition", "execution_finished")


def test_execution_handle_from_another_process_follows_from_a_cursor(box: boxyard.Box) -> None:
    r = box.run("seq 1 2000")
    expected = b"".join(b"%d\n" % i for i in range(1, 2001))
    assert r.stdout_bytes == expected
    again = box.execution(r.execution_id, cursor=1000)
    assert again.info is not None and again.info.state == "finished"
    res = again.wait()
    assert res.stdout_bytes == expected[1000:] and res.exit_code == 0
    ids = [e.id for e in box.executions(page_size=2)]
    assert r.execution_id in ids and len(ids) == len(set(ids))
    assert all(e.state == "finished" for e in box.executions(state="finished"))


def test_files_write_read_upload_download(box: boxyard.Box, tmp_path: Path) -> None:
    box.files.write("/tmp/pysdk/hello.txt", "héllo\n")
    assert box.files.read("/tmp/pysdk/hello.txt") == "héllo\n".encode()
    blob = os.urandom(3 << 20)
    box.files.write("/tmp/pysdk/blob.bin", blob, mode=0o600)
    assert box.files.read("/tmp/pysdk/blob.bin") == blob
    assert box.run("stat -c %a /tmp/pysdk/blob.bin").stdout.strip() == "600"

    src = tmp_path / "tree"
    (src / "d" / "e").mkdir(parents=True)
    (src / "top.txt").write_text("top")
    (src / "d" / "e" / "big.bin").write_bytes(blob)
    os.symlink("top.txt", src / "ln")
    up = box.files.upload(src, "/tmp/pysdk/up")
    assert up.entries == 6 and up.bytes >= len(blob)
    assert box.run("cat /tmp/pysdk/up/tree/top.txt; readlink /tmp/pysdk/up/tree/ln").stdout == "toptop.txt\n"
    assert box.run("sha256sum < /tmp/pysdk/up/tree/d/e/big.bin").stdout.split()[0] == hashlib.sha256(blob).hexdigest()

    dest = tmp_path / "down"
    written = box.files.download("/tmp/pysdk/up/tree", dest)
    assert (dest / "tree" / "d" / "e" / "big.bin").read_bytes() == blob
    assert (dest / "tree" / "top.txt").read_text() == "top"
    assert os.readlink(dest / "tree" / "ln") == "top.txt"
    assert dest / "tree" / "top.txt" in written
    box.files.download("/tmp/pysdk/hello.txt", dest)
    assert (dest / "hello.txt").read_text() == "héllo\n"

    with pytest.raises(IsADirectoryError):
        box.files.read("/tmp/pysdk")
    with pytest.raises(boxyard.ApiError) as e:
        box.files.read("/tmp/pysdk/does-not-exist")
    assert e.value.code in ("not_found", "failed_precondition")
    with pytest.raises(ValueError):
        box.files.write("relative/path", "x")


def test_lifecycle_list_stop_start_delete(client: boxyard.Client, box: boxyard.Box) -> None:
    b = client.boxes.create(labels={"pysdk": "lifecycle"}, wait=False, auto_stop_seconds=3600, ttl_seconds=7200)
    try:
        assert b.state in ("pending", "starting", "running")
        b.wait_until_running(timeout=180)
        assert b.auto_stop_seconds == 3600 and b.ttl_seconds == 7200 and b.runner_id
        assert b.run("echo up").stdout == "up\n"

        assert client.boxes.get(b.id).id == b.id
        all_ids = [x.id for x in client.boxes.list(page_size=1)]
        assert b.id in all_ids and box.id in all_ids and len(all_ids) == len(set(all_ids))
        assert [x.id for x in client.boxes.list(label="pysdk=lifecycle")] == [b.id]
        assert [x.id for x in client.boxes.list(label=("pysdk", "shared"))] == [box.id]
        assert b.id in [x.id for x in client.boxes.list(state="running")]

        b.files.write("/root/persist.txt", "kept")
        assert b.stop().state == "stopped"
        assert b.id in [x.id for x in client.boxes.list(state="stopped")]
        with pytest.raises(boxyard.ConflictError) as e:
            b.run("true")
        assert e.value.code == "box_not_running"
        assert b.start().state == "running"
        assert b.files.read("/root/persist.txt") == b"kept"
    finally:
        b.delete()
    with pytest.raises(boxyard.NotFoundError):
        client.boxes.get(b.id)
    with pytest.raises(boxyard.NotFoundError):
        b.delete()


def test_box_context_manager_deletes_the_box(client: boxyard.Client) -> None:
    with client.boxes.create(name="ctx") as b:
        assert b.run(["true"]).ok
    with pytest.raises(boxyard.NotFoundError):
        b.refresh()


def test_keys_create_list_revoke(client: boxyard.Client, org: Org) -> None:
    k = client.keys.create("pysdk-member", role="member")
    assert k.secret and k.secret.startswith(k.prefix) and k.role == "member" and k.org_id == org.id
    assert k.id in [x.id for x in client.keys.list()]
    with boxyard.Client(org.url, k.secret) as member:
        assert member.me().role == "member"
        with pytest.raises(boxyard.ForbiddenError) as e:
            member.keys.list()
        assert e.value.code == "forbidden"
        revoked = client.keys.revoke(k.id)
        assert revoked.revoked_at is not None
        with pytest.raises(boxyard.UnauthorizedError) as e2:
            member.me()
        assert e2.value.code == "unauthorized"


@pytest.mark.skipif(not ROOTFS.is_file(), reason=f"no image at {ROOTFS} (scripts/build-rootfs.sh)")
def test_snapshot_create_upload_boot_delete(client: boxyard.Client, org: Org) -> None:
    md = boxyard.SnapshotMetadata(cmd=["sh", "-c", "echo from-snapshot $SNAP"], env={"SNAP": "yes"})
    s = client.snapshots.create("pysdk-snap", metadata=md)
    assert s.state == "uploading" and s.org_id == org.id and s.metadata == md
    progress: List[int] = []
    total = ROOTFS.stat().st_size
    active = client.snapshots.upload_image(s.id, ROOTFS, on_progress=lambda sent, tot: progress.append(sent))
    assert active.state == "active" and active.size_bytes == total
    assert active.digest == "sha256:" + hashlib.sha256(ROOTFS.read_bytes()).hexdigest()
    assert progress[0] == 0 and progress[-1] == total and progress == sorted(progress) and len(progress) > 2
    assert client.snapshots.get(s.id).state == "active"
    assert "pysdk-snap" in [x.name for x in client.snapshots.list()]
    with pytest.raises(boxyard.ConflictError) as e:
        client.snapshots.create("pysdk-snap")
    assert e.value.code == "already_exists"
    with client.boxes.create("pysdk-snap") as b:
        assert b.snapshot == "pysdk-snap" and b.env.get("SNAP") == "yes"
        assert b.run(None).stdout == "from-snapshot yes\n"
        with pytest.raises(boxyard.ConflictError) as e:
            client.snapshots.delete(s.id)
        assert e.value.code == "snapshot_in_use"
    client.snapshots.delete(s.id)
    with pytest.raises(boxyard.NotFoundError):
        client.snapshots.get(s.id)


def test_snapshot_registered_from_a_bucket_object(client: boxyard.Client) -> None:
    digest = "sha256:" + "0" * 64
    # Keys under snapshots/ are reserved for uploaded images.
    with pytest.raises(boxyard.ForbiddenError) as e:
        client.snapshots.create("pysdk-src-reserved", source=("snapshots/x.img", digest))
    assert e.value.code == "forbidden"
    s = client.snapshots.create("pysdk-src", source={"key": "pysdk/missing.img", "digest": digest})
    assert s.state in ("verifying", "failed")
    deadline = time.monotonic() + 30
    while s.state == "verifying" and time.monotonic() < deadline:
        time.sleep(0.2)
        s = client.snapshots.get(s.id)
    assert s.state == "failed" and s.reason
    client.snapshots.delete(s.id)
