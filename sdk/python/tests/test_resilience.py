"""Exactness across cuts (a proxy that breaks attach connections at random points), a runner restart while a
command streams, and creates whose answer is lost (one box, one execution)."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
import uuid
from typing import List

import pytest

import boxyard
from conftest import Org, Stack
from proxy import CuttingProxy

SEQ = b"".join(b"%d\n" % i for i in range(1, 300001))


def same(got: bytes, want: bytes) -> bool:
    """Equal bytes (with a short message instead of megabytes when not)."""
    if got != want:
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        pytest.fail(f"{len(got)} bytes instead of {len(want)}; first difference at byte {first}")
    return True


def test_seq_through_random_cuts_is_exact(proxied: boxyard.Client, proxy: CuttingProxy, box: boxyard.Box) -> None:
    pbox = proxied.boxes.get(box.id)
    proxy.cut_websockets = (10_000, 90_000)
    text: List[str] = []
    t = time.monotonic()
    r = pbox.run("seq 1 300000", on_stdout=text.append)
    took = time.monotonic() - t
    print(f"\n[cuts] seq 1 300000: {len(r.stdout_bytes)} bytes, {proxy.cuts} cuts, {took:.1f} s", file=sys.stderr)
    assert same(r.stdout_bytes, SEQ) and r.exit_code == 0 and r.output_end == len(SEQ) and not r.gaps
    assert "".join(text).encode() == SEQ
    assert proxy.cuts >= 20


async def test_seq_through_random_cuts_is_exact_async(proxy: CuttingProxy, org: Org, box: boxyard.Box) -> None:
    async with boxyard.AsyncClient(proxy.url, org.key) as c:
        pbox = await c.boxes.get(box.id)
        proxy.cut_websockets = (10_000, 90_000)
        ex = await pbox.exec("seq 1 300000")
        data = bytearray()
        cursor = 0
        async for chunk in ex:
            assert chunk.cursor == cursor
            cursor = chunk.end
            data += chunk.data
        res = await ex.wait()
    print(f"\n[cuts] async seq: {proxy.cuts} cuts, {ex.reconnects} reconnects", file=sys.stderr)
    assert same(bytes(data), SEQ) and res.exit_code == 0 and res.output_end == len(SEQ)
    assert proxy.cuts >= 20 and ex.reconnects >= 20


def test_stdin_5mib_through_random_cuts_arrives_exactly_once(
    proxied: boxyard.Client, proxy: CuttingProxy, box: boxyard.Box
) -> None:
    pbox = proxied.boxes.get(box.id)
    data = os.urandom(5 << 20)
    proxy.cut_websockets = (60_000, 450_000)
    t = time.monotonic()
    ex = pbox.exec(["cat"], stdin=True)
    errors: List[BaseException] = []

    def writer() -> None:
        try:
            for i in range(0, len(data), 100_000):
                ex.send_stdin(data[i : i + 100_000])
            ex.close_stdin()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    th = threading.Thread(target=writer)
    th.start()
    res = ex.wait(timeout=300)
    th.join(60)
    took = time.monotonic() - t
    print(
        f"\n[cuts] cat of 5 MiB: {proxy.cuts} cuts, {ex.reconnects} reconnects, {took:.1f} s "
        f"(sha256 {hashlib.sha256(data).hexdigest()[:16]})",
        file=sys.stderr,
    )
    assert not errors, errors
    assert same(res.stdout_bytes, data) and res.exit_code == 0
    assert proxy.cuts >= 20


def _wait_gone(pid: int, timeout: float = 30) -> None:
    """Until the process is reaped (a zombie still answers kill(pid, 0), and `boxyard dev up` would think it runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} did not go away")


def test_runner_restart_while_run_streams(stack: Stack, box: boxyard.Box) -> None:
    if stack.dir is None:
        pytest.skip("the stack's directory is unknown (set BOXYARD_TEST_STACK_DIR with BOXYARD_URL)")
    pid_file = stack.dir / "runner.pid"
    n = 150
    # 150 batches of 1000 lines, 50 ms apart: about 8 s of output, over which the runner is killed and restarted.
    cmd = f"i=0; while [ $i -lt {n} ]; do seq $((i*1000+1)) $((i*1000+1000)); i=$((i+1)); sleep 0.05; done"
    expected = b"".join(b"%d\n" % i for i in range(1, n * 1000 + 1))
    started = threading.Event()
    report: List[str] = []

    def restart() -> None:
        try:
            started.wait(60)
            time.sleep(0.5)
            pid = int(pid_file.read_text().strip())
            os.kill(pid, 9)
            _wait_gone(pid)
            t = time.monotonic()
            r = stack.dev("up")
            report.append(f"runner {pid} killed; `boxyard dev up` rc={r.returncode} in {time.monotonic() - t:.1f} s")
            if r.returncode != 0:
                report.append(r.stderr[-2000:])
        except BaseException as e:  # noqa: BLE001 - reported by the test
            report.append(f"restart failed: {e!r}")

    th = threading.Thread(target=restart)
    th.start()
    ex = box.exec(cmd)
    data = bytearray()
    for chunk in ex:
        started.set()
        data += chunk.data
    res = ex.wait()
    th.join(120)
    print(f"\n[restart] {'; '.join(report)}; {ex.reconnects} reconnects", file=sys.stderr)
    assert report and "rc=0" in report[0], report
    assert int(pid_file.read_text().strip()) != 0
    assert same(bytes(data), expected) and res.exit_code == 0 and res.output_end == len(expected)
    assert ex.reconnects >= 1
    # The box still works after the restart.
    assert box.run("echo alive").stdout == "alive\n"


@pytest.mark.parametrize("at_once", [False, True], ids=["answer-lost", "cut-while-running"])
def test_a_create_whose_answer_is_lost_makes_one_box(
    proxied: boxyard.Client,
    proxy: CuttingProxy,
    client: boxyard.Client,
    at_once: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    label = uuid.uuid4().hex[:12]
    proxy.drop_response_of(b"POST /v1/boxes ", at_once=at_once)
    with caplog.at_level(logging.INFO, logger="boxyard"):
        b = proxied.boxes.create(labels={"pysdk-retry": label})
    retries = [r.getMessage() for r in caplog.records if r.name == "boxyard"]
    try:
        assert proxy.dropped == 1
        assert any("Server disconnected" in m for m in retries), retries
        if at_once:
            # The retry came while the first request was still creating the box.
            assert any("request_in_progress" in m for m in retries), retries
        assert b.state == "running"
        assert [x.id for x in client.boxes.list(label=f"pysdk-retry={label}")] == [b.id]
    finally:
        b.delete()


def test_an_execution_whose_answer_is_lost_runs_once(
    proxied: boxyard.Client, proxy: CuttingProxy, box: boxyard.Box
) -> None:
    pbox = proxied.boxes.get(box.id)
    marker = uuid.uuid4().hex
    proxy.drop_response_of(f"POST /v1/boxes/{box.id}/executions ".encode())
    r = pbox.run(["echo", marker])
    assert proxy.dropped == 1 and r.stdout == marker + "\n"
    runs = [e for e in box.executions() if e.command == ["echo", marker]]
    assert [e.id for e in runs] == [r.execution_id]
