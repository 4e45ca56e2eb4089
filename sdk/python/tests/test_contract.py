"""The SDK's types stay in step with the API: its request fields and views are compared with the live OpenAPI
document (GET /v1/openapi.json), and the bodies it sends are checked field by field."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Dict, List, Set

import httpx
import pytest

import boxyard
from boxyard import _requests
from conftest import Stack


@pytest.fixture(scope="module")
def schemas(stack: Stack) -> Dict[str, Any]:
    doc = httpx.get(stack.url + "/v1/openapi.json", timeout=30).json()
    assert doc["openapi"].startswith("3.1")
    s: Dict[str, Any] = doc["components"]["schemas"]
    s["__paths__"] = doc["paths"]
    return s


def props(schemas: Dict[str, Any], name: str) -> Set[str]:
    return set(schemas[name]["properties"])


def params(fn: Any, drop: Set[str] = frozenset()) -> Set[str]:  # type: ignore[assignment]
    return set(inspect.signature(fn).parameters) - {"self"} - set(drop)


def test_boxes_create_takes_exactly_the_fields_of_create_box(schemas: Dict[str, Any]) -> None:
    want = props(schemas, "CreateBox")
    assert set(_requests.CREATE_BOX_FIELDS) == want
    for create in (boxyard.Boxes.create, boxyard.AsyncBoxes.create):
        assert params(create, {"wait"}) == want
    # Every argument reaches the body under its name.
    sample = {
        "name": "n",
        "snapshot": "s",
        "vcpus": 1,
        "memory_mib": 64,
        "disk_mib": 64,
        "env": {"A": "1"},
        "labels": {"l": "v"},
        "runner_selector": {"r": "x"},
        "auto_stop_seconds": 1,
        "ttl_seconds": 1,
    }
    assert set(_requests.create_box_body(**sample)) == want
    # `wait` is the operation's query parameter.
    post = schemas["__paths__"]["/v1/boxes"]["post"]
    assert "wait" in [p["name"] for p in post["parameters"] if p["in"] == "query"]
    states = set(schemas["BoxState"]["enum"])
    assert {"pending", "starting", "running", "stopping", "stopped", "error", "lost"} == states


# exec()'s keyword arguments and the CreateExecution fields they fill.
EXEC_ARGS = {
    "command": "command",
    "env": "env",
    "cwd": "working_dir",
    "user": "user",
    "tty": "tty",
    "stdin": "stdin",
    "timeout": "timeout_ms",
}


def test_exec_sends_exactly_the_fields_of_create_execution(
    schemas: Dict[str, Any], client: boxyard.Client, box: boxyard.Box, monkeypatch: pytest.MonkeyPatch
) -> None:
    want = props(schemas, "CreateExecution")
    assert set(_requests.CREATE_EXECUTION_FIELDS) == want
    for cls in (boxyard.Box, boxyard.AsyncBox):
        assert params(cls.exec) == set(EXEC_ARGS) and set(EXEC_ARGS.values()) == want
        # run() takes the same, with input data instead of the stdin flag, plus the callbacks.
        assert params(cls.run) == set(EXEC_ARGS) - {"tty"} | {"on_stdout", "on_stderr"}
    assert {f.name for f in dataclasses.fields(boxyard.TtySize)} == props(schemas, "TtySize")

    # What goes over the wire, with every option set: exactly the schema's fields, and the API takes them.
    sent: List[_requests.Call] = []
    real = client._t.json

    def record(call: _requests.Call) -> Any:
        sent.append(call)
        return real(call)

    monkeypatch.setattr(client._t, "json", record)
    ex = box.exec(
        ["sh", "-c", "echo $X; pwd"], stdin=True, tty=(10, 40), env={"X": "y"}, cwd="/tmp", user="0", timeout=60
    )
    ex.close_stdin()
    assert ex.wait(timeout=60).stdout.split() == ["y", "/tmp"]
    (create,) = [c for c in sent if c.method == "POST" and c.path.endswith("/executions")]
    assert set(create.json) == want and create.idempotency_key
    assert create.json["timeout_ms"] == 60000 and create.json["tty"] == {"rows": 10, "cols": 40}


def test_snapshot_key_org_and_token_requests_match(schemas: Dict[str, Any]) -> None:
    want = props(schemas, "CreateSnapshot")
    for create in (boxyard.Snapshots.create, boxyard.AsyncSnapshots.create):
        assert params(create) == want
    md = boxyard.SnapshotMetadata(cmd=["a"], env={"A": "1"}, working_dir="/", user="u")
    body = _requests.create_snapshot_body("n", metadata=md, public=True, source=("k", "sha256:" + "0" * 64))
    assert set(body) == want
    assert set(body["metadata"]) == props(schemas, "SnapshotMetadata")
    assert {f.name for f in dataclasses.fields(boxyard.SnapshotMetadata)} == props(schemas, "SnapshotMetadata")
    assert set(body["source"]) == props(schemas, "ExistingObject")

    for create in (boxyard.Keys.create, boxyard.AsyncKeys.create):
        assert params(create) == props(schemas, "CreateKey")
    assert set(_requests.create_key_body("n", "member")) == props(schemas, "CreateKey")
    assert set(schemas["Role"]["enum"]) == {"member", "admin", "platform_admin"}

    for admin in (boxyard.Admin, boxyard.AsyncAdmin):
        assert params(admin.create_org) == props(schemas, "CreateOrg")
        assert params(admin.create_org_key, {"org_id"}) == props(schemas, "CreateKey")
        assert params(admin.create_join_token) == props(schemas, "CreateJoinToken")
    assert {f.name for f in dataclasses.fields(boxyard.Quota)} == props(schemas, "Quota")
    assert set(schemas["Quota"]["required"]) == props(schemas, "Quota")


@pytest.mark.parametrize(
    "model,schema",
    [
        (boxyard.BoxInfo, "BoxView"),
        (boxyard.ExecutionInfo, "ExecutionView"),
        (boxyard.Snapshot, "SnapshotView"),
        (boxyard.Key, "KeyView"),
        (boxyard.Org, "OrgView"),
        (boxyard.Runner, "RunnerView"),
        (boxyard.JoinToken, "JoinTokenView"),
        (boxyard.AuditEntry, "AuditEntry"),
        (boxyard.Me, "Me"),
        (boxyard.PlatformConfig, "PlatformConfig"),
        (boxyard.UploadResult, "UploadResult"),
    ],
)
def test_views_have_the_schemas_fields(schemas: Dict[str, Any], model: type, schema: str) -> None:
    fields = {f.name for f in dataclasses.fields(model)} - {"raw", "secret"}
    assert fields == props(schemas, schema)


def test_box_attributes_cover_the_box_view(schemas: Dict[str, Any]) -> None:
    for cls in (boxyard.Box, boxyard.AsyncBox):
        attrs = {n for n, v in inspect.getmembers(cls) if isinstance(v, property)}
        assert props(schemas, "BoxView") <= attrs
