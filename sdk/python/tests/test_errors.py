"""Bad input gets a typed error with the API's code."""

from __future__ import annotations

import time

import pytest

import boxyard
from conftest import Org


def test_unknown_snapshot_is_not_found(client: boxyard.Client) -> None:
    with pytest.raises(boxyard.NotFoundError) as e:
        client.boxes.create("no-such-snapshot-pysdk")
    assert e.value.status == 404 and e.value.code == "not_found" and "no-such-snapshot-pysdk" in e.value.message
    assert e.value.request_id


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"vcpus": 0}, "vcpus"),
        ({"memory_mib": 10}, "memory_mib"),
        ({"disk_mib": 1}, "disk_mib"),
        ({"ttl_seconds": 0}, "ttl"),
    ],
)
def test_bad_sizes_are_invalid_requests(client: boxyard.Client, kwargs: dict, field: str) -> None:
    with pytest.raises(boxyard.InvalidRequestError) as e:
        client.boxes.create(**kwargs)
    assert e.value.status == 422 and e.value.code == "invalid_request" and field in e.value.message


def test_over_the_per_box_quota(client: boxyard.Client) -> None:
    with pytest.raises(boxyard.QuotaExceededError) as e:
        client.boxes.create(memory_mib=1048576)
    assert e.value.status == 422 and e.value.code == "quota_exceeded"


def test_unknown_ids_and_bad_keys(client: boxyard.Client, org: Org, box: boxyard.Box) -> None:
    with pytest.raises(boxyard.NotFoundError):
        client.boxes.get("01a2321d-0000-7000-8000-000000000000")
    with pytest.raises(boxyard.NotFoundError):
        box.execution("01a2321d-0000-7000-8000-000000000000")
    with pytest.raises(boxyard.InvalidRequestError) as e:
        list(client.boxes.list(state="sleeping"))
    assert e.value.code == "invalid_request"
    with boxyard.Client(org.url, "byk_000000000000_" + "0" * 48) as bad:
        with pytest.raises(boxyard.UnauthorizedError) as e2:
            bad.me()
    assert e2.value.code == "unauthorized"
    with pytest.raises(boxyard.ForbiddenError):
        client.admin.list_orgs()


def test_a_finished_executions_stdin_signal_and_resize(box: boxyard.Box) -> None:
    ex = box.exec(["cat"], stdin=True)
    ex.close_stdin()
    assert ex.wait(timeout=30).exit_code == 0
    # The API drops input sent to a finished execution without a word: the SDK knows it finished and says so
    # with the API's code for acting on a finished execution.
    with pytest.raises(boxyard.ConflictError) as e:
        ex.send_stdin("late")
    assert e.value.status == 409 and e.value.code == "execution_finished"
    # The same from a handle made later (it reads the execution first).
    with pytest.raises(boxyard.ConflictError) as e:
        box.execution(ex.id).send_stdin(b"late")
    assert e.value.code == "execution_finished"
    # Signal and resize are answered by the API itself (once the control plane has recorded the end).
    deadline = time.monotonic() + 10
    while ex.refresh().state != "finished" and time.monotonic() < deadline:
        time.sleep(0.1)
    with pytest.raises(boxyard.ConflictError) as e:
        ex.signal("INT")
    assert e.value.code == "execution_finished"
    with pytest.raises(boxyard.ConflictError) as e:
        ex.resize(10, 10)
    assert e.value.code == "execution_finished"
    with pytest.raises(boxyard.InvalidRequestError) as e2:
        box.exec(["sleep", "1"]).signal("NOPE")
    assert e2.value.code == "invalid_request"


def test_input_to_an_execution_without_stdin(box: boxyard.Box) -> None:
    ex = box.exec(["sleep", "2"])
    with pytest.raises(boxyard.ConflictError) as e:
        ex.send_stdin("x")
    assert e.value.code == "failed_precondition"
    # What the API itself answers on the attach (the SDK's check bypassed): the runner refuses the input; the output
    # and the exit still come, and the next input gets the API's error.
    raw = box.exec(["sh", "-c", "sleep 1; echo still here"])
    raw.info = None
    raw.send_stdin("x")
    res = raw.wait(timeout=30)
    assert res.stdout == "still here\n" and res.exit_code == 0
    with pytest.raises(boxyard.ConflictError) as e:
        raw.send_stdin("y")
    assert e.value.code == "failed_precondition" and "stdin" in e.value.message
    ex.wait(timeout=30)


def test_stopped_box_refuses_executions(client: boxyard.Client) -> None:
    b = client.boxes.create(labels={"pysdk": "errors"})
    try:
        b.stop()
        with pytest.raises(boxyard.ConflictError) as e:
            b.exec(["true"])
        assert e.value.code == "box_not_running"
        with pytest.raises(boxyard.ConflictError) as e:
            b.files.write("/tmp/x", "x")
        assert e.value.code == "box_not_running"
    finally:
        b.delete()
