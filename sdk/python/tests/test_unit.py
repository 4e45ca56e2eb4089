"""The SDK's logic without a stack: the attach state (cursor and stdin offsets), errors, configuration, tar streams,
request bodies and retry rules."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

import boxyard
from boxyard import _attach, _errors, _requests, _retry, _tar
from boxyard._common import Collector
from boxyard._config import resolve_credentials
from boxyard._models import OutputChunk, TextDecoder, parse_time

# -- output cursor ---------------------------------------------------------------------------------------------------


def frame(stream: str, cursor: int, data: bytes) -> bytes:
    return _attach.encode_output(stream, cursor, data)


def test_output_frames_decode_with_the_9_byte_header() -> None:
    f = frame("stderr", 0x0102, b"ab")
    assert f == bytes([2, 0, 0, 0, 0, 0, 0, 1, 2]) + b"ab"
    assert _attach.decode_output(f) == ("stderr", 0x0102, b"ab")
    with pytest.raises(boxyard.ProtocolError):
        _attach.decode_output(b"\x01\x00")
    with pytest.raises(boxyard.ProtocolError):
        _attach.decode_output(bytes(9))


def test_output_seen_before_is_dropped_and_overlaps_are_trimmed() -> None:
    st = _attach.AttachState("e", 0)
    c = st.on_binary(frame("stdout", 0, b"hello"))
    assert c == OutputChunk("stdout", b"hello", 0) and st.cursor == 5
    # A resumed connection that repeats bytes: nothing twice.
    assert st.on_binary(frame("stdout", 0, b"hel")) is None
    c = st.on_binary(frame("stdout", 3, b"lo world"))
    assert c == OutputChunk("stdout", b" world", 5) and st.cursor == 11
    # A hole without a gap message is a protocol error.
    with pytest.raises(boxyard.ProtocolError):
        st.on_binary(frame("stdout", 20, b"x"))
    assert st.done


def test_gap_exit_and_error_messages() -> None:
    st = _attach.AttachState("e", 0)
    gap = st.on_text('{"type":"gap","from":0,"to":7}')
    assert gap == _attach.Gap(0, 7) and st.cursor == 7
    assert st.on_text('{"type":"progress"}') is None  # a newer server's message
    assert isinstance(st.on_text('{"type":"error","code":"runner_unavailable","message":"m"}'), _attach.Reconnect)
    assert st.on_text('{"type":"error","code":"invalid_message","message":"m"}') is None
    ex = st.on_text(
        '{"error":null,"exit_code":3,"killed":false,"output_end":7,"signal":null,"timed_out":false,"type":"exit"}'
    )
    assert isinstance(ex, _attach.Exit) and ex.exit_code == 3 and ex.output_end == 7 and st.done

    st = _attach.AttachState("e", 0)
    with pytest.raises(boxyard.ConflictError) as e:
        st.on_text('{"type":"error","code":"failed_precondition","message":"no stdin"}')
    assert e.value.code == "failed_precondition" and e.value.status == 409 and st.done


def test_refused_input_is_given_up_and_the_output_goes_on() -> None:
    st = _attach.AttachState("e", 0)
    st.stdin.reconnected(0)
    st.stdin.append(b"data")
    ev = st.on_text('{"type":"error","code":"failed_precondition","message":"stdin of execution e is closed"}')
    assert isinstance(ev, _attach.InputRefused) and not st.done
    assert st.stdin.take() is None and not st.stdin.pending() and st.stdin.unacked == 0
    # A second refusal (input was given up already) is the API's error.
    with pytest.raises(boxyard.ConflictError):
        st.on_text('{"type":"error","code":"failed_precondition","message":"m"}')


def test_the_retry_budget_ends_with_an_error_naming_the_cursor_and_attempts() -> None:
    st = _attach.AttachState("exec-1", 0, max_retries=2)
    st.on_binary(frame("stdout", 0, b"x" * 10))
    waits = []
    for _ in range(3):
        assert st.give_up() is None
        st.cut("connection reset")
        waits.append(st.backoff())
    assert waits == sorted(waits) and waits[0] > 0
    err = st.give_up()
    assert isinstance(err, boxyard.AttachError)
    assert err.cursor == 10 and err.attempts == 3 and "connection reset" in str(err) and "cursor 10" in str(err)
    # Progress resets the count.
    st2 = _attach.AttachState("e", 0, max_retries=1)
    st2.cut("a")
    st2.on_binary(frame("stdout", 0, b"y"))
    st2.cut("b")
    assert st2.give_up() is None


# -- stdin offsets ---------------------------------------------------------------------------------------------------


def drain(buf: _attach.StdinBuffer) -> list:
    out = []
    while True:
        item = buf.take()
        if item is None:
            return out
        out.append(item)


def test_input_is_declared_sent_acknowledged_and_resent_after_a_cut() -> None:
    b = _attach.StdinBuffer()
    data = bytes(range(256)) * 1024  # 256 KiB: four frames
    b.append(data)
    assert b.take() is None  # nowhere to send before the server said where stdin stands
    b.reconnected(100)  # the process already had 100 bytes (e.g. from another client)
    sent = drain(b)
    assert [json.loads(d)["offset"] for d, _ in sent] == [100, 100 + 65536, 100 + 2 * 65536, 100 + 3 * 65536]
    assert b"".join(f for _, f in sent) == data  # type: ignore[misc]
    assert b.ack(100 + 70000)
    assert b.unacked == len(data) - 70000
    # Cut: the new connection says the process got 80000 bytes; the rest goes again, from there.
    b.reconnected(100 + 80000)
    again = drain(b)
    assert json.loads(again[0][0])["offset"] == 100 + 80000
    assert b"".join(f for _, f in again) == data[80000:]  # type: ignore[misc]
    b.close()
    ((declare, eof),) = drain(b)
    assert json.loads(declare)["offset"] == 100 + len(data) and json.loads(eof) == {"type": "stdin_eof"}
    # After another cut the EOF is sent again.
    b.reconnected(100 + len(data))
    assert [json.loads(f) for _, f in drain(b)] == [{"type": "stdin_eof"}]  # type: ignore[arg-type]


def test_an_acknowledgement_beyond_what_was_sent_places_later_input_after_it() -> None:
    b = _attach.StdinBuffer()
    b.reconnected(0)
    b.append(b"abc")
    drain(b)
    assert b.ack(10)  # another writer sent 7 more bytes
    b.append(b"def")
    ((declare, data),) = drain(b)
    assert json.loads(declare)["offset"] == 10 and data == b"def"


def test_an_ack_that_arrives_while_a_frame_is_in_flight_keeps_the_rest() -> None:
    b = _attach.StdinBuffer()
    b.reconnected(0)
    b.append(b"x" * 100_000)
    first = b.take()
    assert first is not None
    b.ack(65536)  # the frame just taken was acknowledged before the next was taken
    rest = drain(b)
    assert json.loads(rest[0][0])["offset"] == 65536 and len(rest[0][1]) == 100_000 - 65536


def test_without_an_offset_from_the_server_input_is_sent_plainly_once() -> None:
    b = _attach.StdinBuffer()
    b.append(b"hi")
    b.reconnected(None)
    assert drain(b) == [(None, b"hi")]
    assert b.unacked == 0


# -- text ------------------------------------------------------------------------------------------------------------


def test_utf8_split_across_chunks_reaches_callbacks_whole() -> None:
    got = []
    col = Collector(on_stdout=got.append)
    text = "héllo → wörld ✓"
    raw = text.encode()
    for i in range(len(raw)):
        col.feed(OutputChunk("stdout", raw[i : i + 1], i))
    res = col.finish("e", _attach.Exit(0, None, False, False, None, len(raw)), [])
    assert "".join(got) == text and res.stdout == text and "\ufffd" not in "".join(got)
    d = TextDecoder()
    assert d.feed(b"\xe2\x9c") == "" and d.feed(b"\x93") == "✓" and d.feed(b"\xff") == "\ufffd"
    assert d.feed(b"\xc3") == "" and d.flush() == "\ufffd"


def test_times_parse_with_any_fraction() -> None:
    assert parse_time("2026-12-01T14:43:16.946699Z").microsecond == 946699
    assert parse_time("2026-12-01T14:43:16.9Z").microsecond == 900000
    assert parse_time("2026-12-01T14:43:16.123456789Z").microsecond == 123456
    assert parse_time("2026-12-01T14:43:16+02:00").utcoffset().total_seconds() == 7200  # type: ignore[union-attr]


# -- errors ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,code,cls",
    [
        (400, "invalid_query", boxyard.InvalidRequestError),
        (422, "invalid_request", boxyard.InvalidRequestError),
        (401, "unauthorized", boxyard.UnauthorizedError),
        (403, "forbidden", boxyard.ForbiddenError),
        (404, "not_found", boxyard.NotFoundError),
        (409, "invalid_state", boxyard.ConflictError),
        (422, "quota_exceeded", boxyard.QuotaExceededError),
        (429, "quota_exceeded", boxyard.QuotaExceededError),
        (429, "runner_busy", boxyard.RateLimitedError),
        (503, "no_capacity", boxyard.UnavailableError),
        (502, "runner_error", boxyard.ServerError),
    ],
)
def test_errors_get_their_class(status: int, code: str, cls: type) -> None:
    body = json.dumps({"code": code, "message": "m", "retry_after": 3, "request_id": "r1"}).encode()
    e = _errors.api_error(status, body, {})
    assert type(e) is cls and e.status == status and e.code == code and e.retry_after == 3 and e.request_id == "r1"
    assert isinstance(e, boxyard.ApiError)


def test_a_body_that_is_not_an_error_body_still_gives_the_status() -> None:
    e = _errors.api_error(502, b"<html>bad gateway</html>", {"x-request-id": "abc", "retry-after": "4"})
    assert isinstance(e, boxyard.ServerError) and e.code == "http_error" and e.request_id == "abc"
    assert e.retry_after == 4.0 and "bad gateway" in e.message


def test_retryable_answers_are_the_ones_the_api_marks() -> None:
    def err(status: int, code: str, ra: float | None = None) -> boxyard.ApiError:
        return _errors.error_class(status, code)(status, code, "m", retry_after=ra)

    assert _retry.retryable_answer(err(503, "no_capacity", 10))
    assert not _retry.retryable_answer(err(503, "no_capacity"))
    assert _retry.retryable_answer(err(409, "request_in_progress", 1))
    assert not _retry.retryable_answer(err(409, "invalid_state", 2))
    assert _retry.retryable_answer(err(429, "runner_busy", 1))
    assert not _retry.retryable_answer(err(429, "quota_exceeded"))
    a = _retry.Attempts(_retry.RetryPolicy(deadline=1.0))
    a.count = 1
    assert a.next_wait(0.5) == pytest.approx(0.5, abs=0.01)
    assert a.next_wait(5.0) is None  # past the deadline
    b = _retry.Attempts(_retry.RetryPolicy(deadline=1000.0, max_transport_retries=3))
    assert [b.next_wait(transport=True) is not None for _ in range(4)] == [True, True, True, False]


# -- requests --------------------------------------------------------------------------------------------------------


def test_bodies_send_only_what_was_given() -> None:
    assert _requests.create_box_body() == {}
    assert _requests.create_box_body(vcpus=2, labels={"a": "b"}) == {"vcpus": 2, "labels": {"a": "b"}}
    assert _requests.create_execution_body(command="echo hi") == {"command": ["sh", "-c", "echo hi"]}
    assert _requests.create_execution_body(command=["ls", "-l"], stdin=True, timeout_ms=5) == {
        "command": ["ls", "-l"],
        "stdin": True,
        "timeout_ms": 5,
    }
    assert _requests.timeout_ms(1.5) == 1500 and _requests.timeout_ms(0.0001) == 1
    with pytest.raises(TypeError):
        _requests.create_box_body(vcpus="2")  # type: ignore[arg-type]
    c1 = _requests.create("/v1/boxes", {})
    c2 = _requests.create("/v1/boxes", {})
    assert c1.idempotency_key and c1.idempotency_key != c2.idempotency_key
    assert c1.request_headers()["idempotency-key"] == c1.idempotency_key
    assert c1.body_bytes() is c1.body_bytes()  # the same bytes on every attempt
    assert _requests.seg("a/../b") == "a%2F..%2Fb"


# -- configuration ---------------------------------------------------------------------------------------------------


def test_credentials_come_from_arguments_env_then_the_default_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for v in ("BOXYARD_URL", "BOXYARD_KEY", "BOXYARD_PROFILE"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    with pytest.raises(boxyard.ConfigError):
        resolve_credentials(None, None)
    (tmp_path / "boxyard").mkdir()
    (tmp_path / "boxyard" / "profiles.json").write_text(
        json.dumps(
            {
                "default": "dev",
                "profiles": {
                    "dev": {"url": "http://127.0.0.1:1/", "key": "k-dev"},
                    "prod": {"url": "https://p", "key": "k-prod"},
                },
            }
        )
    )
    assert boxyard.profiles_path() == tmp_path / "boxyard" / "profiles.json"
    assert resolve_credentials(None, None) == ("http://127.0.0.1:1", "k-dev")
    assert resolve_credentials(None, None, "prod") == ("https://p", "k-prod")
    monkeypatch.setenv("BOXYARD_PROFILE", "prod")
    assert resolve_credentials(None, None) == ("https://p", "k-prod")
    monkeypatch.setenv("BOXYARD_URL", "http://env")
    monkeypatch.setenv("BOXYARD_KEY", "k-env")
    assert resolve_credentials(None, None) == ("http://env", "k-env")
    assert resolve_credentials("http://arg", "k-arg") == ("http://arg", "k-arg")
    monkeypatch.delenv("BOXYARD_KEY")
    # A profile's key never goes to another URL than the profile's.
    with pytest.raises(boxyard.ConfigError):
        resolve_credentials("http://elsewhere", None)
    assert resolve_credentials("https://p/", None) == ("https://p", "k-prod")
    c = boxyard.Client("http://127.0.0.1:9", "byk_secret")
    assert "byk_secret" not in repr(c)
    c.close()


# -- tar -------------------------------------------------------------------------------------------------------------


def test_tar_streams_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "ünïcode name.bin").write_bytes(os.urandom(700_000))  # several chunks
    (src / "sub" / "deeper" / "empty").write_bytes(b"")
    os.symlink("a.txt", src / "link")
    chunks = list(_tar.iter_tar(src))
    assert len(chunks) > 1 and all(len(c) <= _tar.CHUNK + 2 * tarfile.BLOCKSIZE for c in chunks)
    out = tmp_path / "out"
    written = _tar.extract_stream(_tar.ChunkReader(iter(chunks)), out)
    assert (out / "src" / "a.txt").read_text() == "alpha"
    assert (out / "src" / "sub" / "ünïcode name.bin").read_bytes() == (src / "sub" / "ünïcode name.bin").read_bytes()
    assert (out / "src" / "sub" / "deeper" / "empty").read_bytes() == b""
    assert os.readlink(out / "src" / "link") == "a.txt"
    assert out / "src" / "a.txt" in written
    one = _tar.single_file_tar("f.txt", b"data")
    assert _tar.read_single_file(io.BytesIO(one), "/f.txt") == b"data"


def test_an_archive_entry_escaping_the_destination_is_refused(tmp_path: Path) -> None:
    for name, kind, link in (("../evil", tarfile.REGTYPE, ""), ("ok", tarfile.SYMTYPE, "/etc/passwd")):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            tf.addfile(info, io.BytesIO(b""))
        buf.seek(0)
        with pytest.raises(boxyard.UnsafeArchiveError):
            _tar.extract_stream(buf, tmp_path / "dest")
    assert not (tmp_path / "evil").exists()
