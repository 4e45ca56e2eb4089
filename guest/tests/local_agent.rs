//! The guest agent's API, exercised on the host in local test mode (`--listen-unix`): fast checks of every call.
//! The same checks run inside real VMs in runner/tests/qemu_vm.rs.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use boxyard_proto::agent::{
    DownloadRequest, ExecRequest, ListExecsRequest, ReleaseRequest, ResizeRequest, SignalRequest, Tty, UploadChunk,
    WaitRequest, WriteStdinRequest, exec_result::Outcome,
};
use boxyard_runner::agent::{self, Agent, OutputEvent, OutputFollower, collect};

struct LocalAgent {
    child: Child,
    dir: tempfile::TempDir,
}

impl LocalAgent {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_boxyard-guest"))
            .arg("--listen-unix")
            .arg(dir.path().join("agent.sock"))
            .args(extra)
            .spawn()
            .unwrap();
        LocalAgent { child, dir }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("agent.sock")
    }

    async fn connect(&self) -> Agent {
        agent::connect(&self.socket(), Duration::from_secs(10)).await.unwrap()
    }
}

impl Drop for LocalAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn req(argv: &[&str]) -> ExecRequest {
    ExecRequest { argv: argv.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

async fn run(a: &mut Agent, r: ExecRequest) -> agent::Collected {
    let id = a.exec(r).await.unwrap().into_inner().exec_id;
    collect(a, &id).await.unwrap()
}

fn code(c: &agent::Collected) -> Option<i32> {
    match c.result.as_ref()?.outcome {
        Some(Outcome::ExitCode(n)) => Some(n),
        _ => None,
    }
}

#[tokio::test]
async fn echo_exit_codes_env_and_workdir() {
    let la = LocalAgent::start(&[]);
    let mut a = la.connect().await;
    let c = run(&mut a, req(&["echo", "hello"])).await;
    assert_eq!(c.stdout, b"hello\n");
    assert_eq!(code(&c), Some(0));

    let c = run(&mut a, req(&["sh", "-c", "echo out; echo err >&2; exit 3"])).await;
    assert_eq!((c.stdout_str().as_str(), c.stderr_str().as_str(), code(&c)), ("out\n", "err\n", Some(3)));

    let mut r = req(&["sh", "-c", "echo $GREETING; pwd"]);
    r.env = HashMap::from([("GREETING".to_string(), "hi there".to_string())]);
    r.working_dir = la.dir.path().display().to_string();
    let c = run(&mut a, r).await;
    assert_eq!(c.stdout_str(), format!("hi there\n{}\n", la.dir.path().display()));
}

#[tokio::test]
async fn stdin_is_piped_with_eof_and_retries_do_not_duplicate() {
    let la = LocalAgent::start(&[]);
    let mut a = la.connect().await;
    let mut r = req(&["cat"]);
    r.stdin = true;
    let id = a.exec(r).await.unwrap().into_inner().exec_id;
    let w = |offset, data: &[u8], eof| WriteStdinRequest { exec_id: id.clone(), offset, data: data.to_vec(), eof };
    assert_eq!(a.write_stdin(w(0, b"hello ", false)).await.unwrap().into_inner().offset, 6);
    // A retry of the same write (same offset) must not duplicate; an overlapping one writes only the new part.
    assert_eq!(a.write_stdin(w(0, b"hello ", false)).await.unwrap().into_inner().offset, 6);
    assert_eq!(a.write_stdin(w(3, b"lo world", true)).await.unwrap().into_inner().offset, 11);
    let c = collect(&mut a, &id).await.unwrap();
    assert_eq!(c.stdout, b"hello world");
    assert_eq!(code(&c), Some(0));
    // A write ahead of the offset is refused.
    let err = a.write_stdin(w(50, b"x", false)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn tty_exec_and_resize() {
    let la = LocalAgent::start(&[]);
    let mut a = la.connect().await;
    let mut r = req(&["sh", "-c", "stty size; read x; stty size"]);
    r.tty = Some(Tty { rows: 24, cols: 80 });
    r.stdin = true;
    let id = a.exec(r).await.unwrap().into_inner().exec_id;
    let mut f = OutputFollower::start(&mut a, &id, 0).await.unwrap();
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains("24 80") {
        match f.next().await.unwrap().unwrap() {
            OutputEvent::Data { data, .. } => out.extend(data),
            OutputEvent::Exit(r) => panic!("exited early: {r:?} {}", String::from_utf8_lossy(&out)),
        }
    }
    a.resize(ResizeRequest { exec_id: id.clone(), tty: Some(Tty { rows: 40, cols: 100 }) }).await.unwrap();
    a.write_stdin(WriteStdinRequest { exec_id: id.clone(), offset: 0, data: b"go\n".to_vec(), eof: false })
        .await
        .unwrap();
    let c = collect(&mut a, &id).await.unwrap();
    let text = c.stdout_str();
    assert!(text.contains("40 100"), "{text:?}");
    assert_eq!(code(&c), Some(0));
    // Resizing a non-tty execution is refused clearly.
    let plain = a.exec(req(&["true"])).await.unwrap().into_inner().exec_id;
    let err = a.resize(ResizeRequest { exec_id: plain, tty: Some(Tty { rows: 1, cols: 1 }) }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn signals_timeouts_and_bad_input() {
    let la = LocalAgent::start(&[]);
    let mut a = la.connect().await;
    let id = a.exec(req(&["sleep", "100"])).await.unwrap().into_inner().exec_id;
    let err = a.signal(SignalRequest { exec_id: id.clone(), signal: "BOGUS".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("BOGUS"), "{}", err.message());
    a.signal(SignalRequest { exec_id: id.clone(), signal: "TERM".into() }).await.unwrap();
    let r = a.wait(WaitRequest { exec_id: id }).await.unwrap().into_inner();
    assert_eq!(r.outcome, Some(Outcome::Signal("SIGTERM".into())));
    assert!(!r.timed_out);

    let mut t = req(&["sleep", "100"]);
    t.timeout_ms = 300;
    let c = run(&mut a, t).await;
    let r = c.result.unwrap();
    assert!(r.timed_out);
    assert_eq!(r.outcome, Some(Outcome::Signal("SIGTERM".into())));

    // A process that ignores SIGTERM is killed after the grace period.
    let mut t = req(&["sh", "-c", "trap '' TERM; sleep 100"]);
    t.timeout_ms = 200;
    t.kill_grace_ms = 300;
    let r = run(&mut a, t).await.result.unwrap();
    assert!(r.timed_out);
    assert_eq!(r.outcome, Some(Outcome::Signal("SIGKILL".into())));

    let c = run(&mut a, req(&["no-such-command-xyz"])).await;
    assert_eq!(code(&c), Some(127));
    assert!(c.stderr_str().contains("no-such-command-xyz: command not found"), "{}", c.stderr_str());
    assert!(c.result.unwrap().error.contains("command not found"));

    assert_eq!(a.exec(req(&[])).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let mut bad_dir = req(&["true"]);
    bad_dir.working_dir = "/no/such/dir".into();
    assert_eq!(a.exec(bad_dir).await.unwrap_err().code(), tonic::Code::FailedPrecondition);
    let mut bad_user = req(&["true"]);
    bad_user.user = "no-such-user-xyz".into();
    // A user the box lacks is the box's state (its /etc/passwd); a malformed one is the request's shape.
    assert_eq!(a.exec(bad_user).await.unwrap_err().code(), tonic::Code::FailedPrecondition);
    let mut malformed_user = req(&["true"]);
    malformed_user.user = "1:x".into();
    assert_eq!(a.exec(malformed_user).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let err = a.wait(WaitRequest { exec_id: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn upload_then_download_round_trips_bytes() {
    let la = LocalAgent::start(&[]);
    let mut a = la.connect().await;
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut tarball = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(payload.len() as u64);
    h.set_mode(0o640);
    tarball.append_data(&mut h, "data.bin", payload.as_slice()).unwrap();
    let tarball = tarball.into_inner().unwrap();
    let dest = la.dir.path().join("up");
    let chunks: Vec<UploadChunk> = tarball
        .chunks(50_000)
        .enumerate()
        .map(|(i, c)| UploadChunk {
            dest_dir: if i == 0 { dest.display().to_string() } else { String::new() },
            data: c.to_vec(),
        })
        .collect();
    let r = a.upload_files(tokio_stream::iter(chunks)).await.unwrap().into_inner();
    assert_eq!(r.entries, 1);
    // The file data written, not the archive's size (headers and padding).
    assert_eq!(r.bytes, payload.len() as u64);
    assert!(tarball.len() > payload.len());

    let mut s = a
        .download_files(DownloadRequest { path: dest.join("data.bin").display().to_string() })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(c) = s.message().await.unwrap() {
        got.extend(c.data);
    }
    let mut ar = tar::Archive::new(got.as_slice());
    let mut e = ar.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(e.path().unwrap().to_str(), Some("data.bin"));
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut e, &mut back).unwrap();
    assert!(back == payload, "downloaded bytes differ");

    let err = a.download_files(DownloadRequest { path: "/no/such/file".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let bad = vec![UploadChunk { dest_dir: "relative/dir".into(), data: vec![] }];
    assert_eq!(a.upload_files(tokio_stream::iter(bad)).await.unwrap_err().code(), tonic::Code::InvalidArgument);
}

/// The host drops its connection mid-stream, reconnects and resumes from its cursor: no byte lost or repeated.
#[tokio::test]
async fn output_resumes_from_cursor_after_disconnect() {
    let la = LocalAgent::start(&[]);
    let expected: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    let mut a = la.connect().await;
    let id = a.exec(req(&["seq", "1", "200000"])).await.unwrap().into_inner().exec_id;
    let mut got = Vec::new();
    let mut cursor = 0;
    let mut cuts = 0;
    let result = loop {
        let mut f = OutputFollower::start(&mut a, &id, cursor).await.unwrap();
        let mut received_here = 0;
        let ended = loop {
            match f.next().await.unwrap() {
                Some(OutputEvent::Data { data, .. }) => {
                    received_here += data.len();
                    got.extend(data);
                    f.ack(f.cursor).await;
                    if cuts < 5 && received_here > 100_000 {
                        break None;
                    }
                }
                Some(OutputEvent::Exit(r)) => break Some(r),
                None => panic!("stream ended without exit"),
            }
        };
        cursor = f.cursor;
        if let Some(r) = ended {
            break r;
        }
        // Cut: drop every handle on the channel and open a new session.
        drop(f);
        drop(a);
        cuts += 1;
        a = la.connect().await;
    };
    assert_eq!(cuts, 5);
    assert_eq!(result.outcome, Some(Outcome::ExitCode(0)));
    assert_eq!(got.len(), expected.len());
    assert!(got == expected.as_bytes(), "reassembled output differs");
    // Released cursors are refused, not silently skipped.
    let err = OutputFollower::start(&mut a, &id, 0).await.err().expect("cursor 0 was acknowledged");
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    // The host releases the finished execution.
    a.release(ReleaseRequest { exec_id: id.clone() }).await.unwrap();
    let list = a.list_execs(ListExecsRequest {}).await.unwrap().into_inner();
    assert!(list.execs.iter().all(|e| e.exec_id != id));
}

/// A full ring back-pressures the process instead of dropping output.
#[tokio::test]
async fn full_ring_back_pressures_the_process() {
    let la = LocalAgent::start(&["--ring-bytes", "65536"]);
    let mut a = la.connect().await;
    // 2 MB of output, then a marker file once everything was written.
    let marker = la.dir.path().join("done");
    let script = format!("head -c 2000000 /dev/zero | tr '\\0' x; touch {}", marker.display());
    let id = a.exec(req(&["sh", "-c", &script])).await.unwrap().into_inner().exec_id;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!marker.exists(), "the process finished writing although nobody read its output");
    let list = a.list_execs(ListExecsRequest {}).await.unwrap().into_inner();
    let info = list.execs.iter().find(|e| e.exec_id == id).unwrap();
    assert!(info.output_end <= 65536, "ring holds {} bytes, above its bound", info.output_end);
    let c = collect(&mut a, &id).await.unwrap();
    assert_eq!(c.stdout.len(), 2_000_000);
    assert!(c.stdout.iter().all(|&b| b == b'x'));
    assert!(marker.exists());
}

/// stdout and stderr filling a small ring at the same time: both pumps may take the last free space at once, so
/// the ring overshoots its bound; that must neither kill a pump (the process would get SIGPIPE) nor lose output.
#[tokio::test]
async fn two_streams_filling_the_ring_at_once_lose_nothing() {
    let la = LocalAgent::start(&["--ring-bytes", "65536"]);
    let mut a = la.connect().await;
    let c =
        run(&mut a, req(&["sh", "-c", "seq 1 300000 & p=$!; seq 1 300000 >&2; e=$?; wait $p; exit $((e + $?))"])).await;
    let expected: String = (1..=300000).map(|i| format!("{i}\n")).collect();
    assert_eq!(code(&c), Some(0), "a writer died: {:?}", c.result);
    assert!(c.stdout == expected.as_bytes(), "stdout incomplete: {} bytes", c.stdout.len());
    assert!(c.stderr == expected.as_bytes(), "stderr incomplete: {} bytes", c.stderr.len());
}
