//! A real `boxyard-runner serve` process for tests (started by boxyard-devstack): on a state directory with a dev TLS
//! certificate, reached through the runner API, killable with SIGKILL and restartable on the same state directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boxyard_devstack::runner;
use boxyard_proto::runner::{self as pb, attach_event::Event, attach_request::Msg, execution_result::Outcome};
use boxyard_runner::client::{self, Client};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// A runner process (boxyard-devstack) on its own temporary state directory; dropping it kills it and ends its
/// boxes.
pub struct RunnerProc {
    pub state: PathBuf,
    inner: runner::Runner,
    _tmp: Option<tempfile::TempDir>,
}

impl RunnerProc {
    /// Starts a runner with the local backend on a fresh state directory.
    pub fn local(extra: &[&str]) -> Self {
        let mut args: Vec<String> = vec!["--backend".into(), "local".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::with_args(args)
    }

    /// Starts a runner with any arguments (e.g. the QEMU backend) on a fresh state directory.
    pub fn with_args(args: Vec<String>) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let spec = runner::Spec {
            program: PathBuf::from(env!("CARGO_BIN_EXE_boxyard-runner")),
            state_dir: tmp.path().to_path_buf(),
            listen: "127.0.0.1:0".into(),
            args,
            log_filter: Some("info,boxyard_runner=debug".into()),
        };
        let inner = runner::Runner::start(spec).unwrap_or_else(|e| panic!("{e}"));
        RunnerProc { state: tmp.path().to_path_buf(), inner, _tmp: Some(tmp) }
    }

    /// (Re)starts the runner process on the same state directory; returns once it serves.
    pub fn start(&mut self) {
        self.inner.restart().unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn log(&self) -> String {
        self.inner.log()
    }

    /// SIGKILL: the runner gets no chance to clean up (its VMs keep running).
    pub fn kill9(&mut self) {
        self.inner.kill();
    }

    /// SIGTERM, and waits for the runner to exit (it must exit 0).
    pub fn terminate(&mut self) {
        if let Some(status) = self.inner.terminate().unwrap() {
            assert!(status.success(), "the runner exited with {status} on SIGTERM; log:\n{}", self.log());
        }
    }

    pub async fn client(&self) -> Client {
        let addr: String = serde_json::from_slice(&std::fs::read(self.state.join("runner.addr")).unwrap()).unwrap();
        let ca = std::fs::read(self.state.join("tls/dev-cert.pem")).unwrap();
        client::connect(&addr, &ca, "localhost").await.unwrap()
    }
}

/// Every process whose command line mentions `needle`.
pub use boxyard_devstack::process::pids_mentioning;

pub fn code_of(e: &tonic::Status) -> tonic::Code {
    e.code()
}

/// Creates a box (for the local backend no image is needed).
pub async fn create_box(c: &mut Client, id: &str) -> pb::BoxInfo {
    c.create_box(pb::CreateBoxRequest { box_id: id.into(), spec: None }).await.unwrap().into_inner()
}

pub fn exec_req(box_id: &str, argv: &[&str]) -> pb::ExecRequest {
    pb::ExecRequest { box_id: box_id.into(), argv: argv.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

pub fn sh(box_id: &str, script: &str) -> pb::ExecRequest {
    exec_req(box_id, &["sh", "-c", script])
}

/// `seq 1 n` as bytes.
pub fn seq(n: u64) -> Vec<u8> {
    let mut v = Vec::new();
    for i in 1..=n {
        v.extend_from_slice(format!("{i}\n").as_bytes());
    }
    v
}

/// An open Attach: a sender for client messages and the event stream.
pub struct Attach {
    pub input: mpsc::Sender<pb::AttachRequest>,
    pub events: tonic::Streaming<pb::AttachEvent>,
}

pub async fn attach(c: &mut Client, exec_id: &str, from: u64) -> Result<Attach, tonic::Status> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(pb::AttachRequest {
        msg: Some(Msg::Start(pb::AttachStart { execution_id: exec_id.into(), from_cursor: from })),
    })
    .await
    .unwrap();
    let events = c.attach(ReceiverStream::new(rx)).await?.into_inner();
    Ok(Attach { input: tx, events })
}

/// Output reassembled from attach events, checking that records arrive exactly in cursor order (nothing lost, nothing
/// duplicated).
#[derive(Default, Debug)]
pub struct Reassembled {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub cursor: u64,
    pub gaps: Vec<(u64, u64)>,
    pub result: Option<pb::ExecutionResult>,
    pub attached: u32,
    /// The last stdin offset the runner reported.
    pub stdin_offset: Option<u64>,
}

impl Reassembled {
    pub fn apply(&mut self, ev: pb::AttachEvent) {
        match ev.event.expect("an event") {
            Event::Attached(x) => {
                self.attached += 1;
                if x.stdin_offset.is_some() {
                    self.stdin_offset = x.stdin_offset;
                }
            }
            Event::Output(o) => {
                assert_eq!(o.cursor, self.cursor, "output record out of order: a byte was lost or duplicated");
                self.cursor += o.data.len() as u64;
                match o.stream {
                    2 => self.stderr.extend_from_slice(&o.data),
                    _ => self.stdout.extend_from_slice(&o.data),
                }
            }
            Event::Gap(g) => {
                assert_eq!(g.from, self.cursor, "a gap must start at the reader's cursor");
                self.gaps.push((g.from, g.to));
                self.cursor = g.to;
            }
            Event::Exit(r) => {
                assert_eq!(r.output_end, self.cursor, "the result must come after every output byte");
                self.result = Some(r);
            }
            Event::StdinOffset(n) => {
                assert!(self.stdin_offset.is_none_or(|o| n >= o), "stdin offsets only grow");
                self.stdin_offset = Some(n);
            }
        }
    }

    pub fn exit_code(&self) -> Option<i32> {
        match self.result.as_ref()?.outcome {
            Some(Outcome::ExitCode(c)) => Some(c),
            _ => None,
        }
    }

    /// Reads an attach to its end.
    pub async fn drain(&mut self, a: &mut Attach) -> Result<(), tonic::Status> {
        while let Some(ev) = a.events.message().await? {
            self.apply(ev);
        }
        Ok(())
    }
}

/// Attaches from `from` and reads to the end.
pub async fn collect(c: &mut Client, exec_id: &str, from: u64) -> Reassembled {
    let mut r = Reassembled { cursor: from, ..Default::default() };
    let mut a = attach(c, exec_id, from).await.unwrap();
    r.drain(&mut a).await.unwrap();
    r
}

/// Polls until the execution has finished.
pub async fn wait_finished(c: &mut Client, exec_id: &str, timeout: Duration) -> pb::Execution {
    let deadline = Instant::now() + timeout;
    loop {
        let e = c.get_execution(pb::ExecutionRef { execution_id: exec_id.into() }).await.unwrap().into_inner();
        if e.state == pb::ExecutionState::Finished as i32 {
            return e;
        }
        assert!(Instant::now() < deadline, "execution {exec_id} did not finish within {timeout:?}: {e:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn dir_exists(p: &Path) -> bool {
    p.exists()
}
