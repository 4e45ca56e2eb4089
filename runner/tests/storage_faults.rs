//! What a user sees when the runner's disk fails (injected through the storage seam, `boxyard_runner::storage`):
//! the execution keeps the output stored before the failure, the failure is logged at `warn` and counted in
//! `boxyard_runner_storage_errors_total`, nothing acknowledged is lost, and once the disk works again the pump
//! resumes and the output after the failure arrives exactly once (the guest kept it, unacknowledged).
//!
//! In process, with the `local` backend: the real guest agent runs as a host process.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use boxyard_proto::runner as pb;
use boxyard_runner::boxes::BoxManager;
use boxyard_runner::config::RunnerConfig;
use boxyard_runner::execlog::Item;
use boxyard_runner::executions::Execution;
use boxyard_runner::metrics::{Counters, render};
use boxyard_runner::storage::{Area, Fault, Storage};
use boxyard_runner::vm::local::LocalBackend;

/// Everything the runner logs, for the assertions on levels.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let b = buf.clone();
        let writer = move || Capture(b.clone());
        tracing_subscriber::fmt().with_writer(writer).with_ansi(false).with_env_filter("info").init();
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        std::io::stderr().write_all(data)?;
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

struct Runner {
    mgr: Arc<BoxManager>,
    storage: Arc<Storage>,
    dir: tempfile::TempDir,
}

impl Drop for Runner {
    fn drop(&mut self) {
        // The local agents outlive the manager by design: end them.
        let socket = self.dir.path().join("boxes/b1/vm/agent.sock").display().to_string();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
            if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline"))
                && String::from_utf8_lossy(&cmd).contains(&socket)
            {
                // SAFETY: plain kill(2) of the test's own agent process.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

async fn runner() -> Runner {
    logs();
    let backend = LocalBackend::beside_current_exe()
        .expect("boxyard-guest is not built beside the tests: run `cargo build -p boxyard-guest` first");
    let dir = tempfile::tempdir().unwrap();
    let mut config = RunnerConfig::new(dir.path().to_path_buf());
    let storage = config.storage.clone();
    config.agent_timeout = Duration::from_secs(5);
    let mgr = BoxManager::open(config, Arc::new(backend)).await.unwrap();
    mgr.create_box("b1", None).await.unwrap();
    Runner { mgr, storage, dir }
}

fn seq(from: u64, to: u64) -> Vec<u8> {
    (from..=to).flat_map(|i| format!("{i}\n").into_bytes()).collect()
}

/// Everything the log holds from cursor 0, checking that records are contiguous (nothing lost or doubled).
async fn stored(exec: &Arc<Execution>) -> Vec<u8> {
    let e = exec.clone();
    tokio::task::spawn_blocking(move || {
        let mut reader = e.log.reader(0);
        let mut out = Vec::new();
        loop {
            let items = reader.read(1 << 20).unwrap();
            if items.is_empty() {
                return out;
            }
            for item in items {
                match item {
                    Item::Data { cursor, data, .. } => {
                        assert_eq!(cursor, out.len() as u64, "a record out of order: a byte lost or duplicated");
                        out.extend_from_slice(&data);
                    }
                    Item::Gap { .. } => panic!("no retention gap expected"),
                }
            }
        }
    })
    .await
    .unwrap()
}

async fn until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn storage_errors_metric(mgr: &BoxManager) -> u64 {
    let text = render(mgr, &Counters::default());
    text.lines()
        .find_map(|l| l.strip_prefix("boxyard_runner_storage_errors_total "))
        .unwrap_or_else(|| panic!("no storage error counter in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Runs `seq 1 2000`, waits for it to be stored, injects `fault`, lets the command print `seq 2001 4000` and
/// exit, checks what is seen while the disk fails, clears the fault and checks the whole output.
async fn output_survives(fault: Fault, log_advances_during_fault: bool) {
    let r = runner().await;
    let go = r.dir.path().join("go");
    let script = format!("seq 1 2000; while [ ! -e {} ]; do sleep 0.02; done; seq 2001 4000", go.display());
    let req =
        pb::ExecRequest { box_id: "b1".into(), argv: vec!["sh".into(), "-c".into(), script], ..Default::default() };
    let id = r.mgr.exec(req).await.unwrap().execution_id;
    let exec = r.mgr.execution(&id).unwrap();
    let first = seq(1, 2000);
    until("the first half stored", Duration::from_secs(20), || exec.log.position().end == first.len() as u64).await;

    let errors_before = storage_errors_metric(&r.mgr);
    r.storage.inject(fault);
    std::fs::write(&go, b"").unwrap();
    // The command prints the rest and exits while the disk fails.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!exec.is_finished(), "a result was stored although the disk fails");
    if !log_advances_during_fault {
        assert_eq!(exec.log.position().end, first.len() as u64);
        assert!(stored(&exec).await == first, "the output stored before the failure changed");
    }
    assert!(storage_errors_metric(&r.mgr) > errors_before, "the failures are not counted in /metrics");
    let logged = log_text();
    let warned =
        logged.lines().any(|l| (l.contains(" WARN ") || l.contains(" ERROR ")) && l.contains("cannot store output"));
    assert!(warned, "the storage failure was not logged at warn or error:\n{logged}");

    r.storage.clear();
    until("the execution finished after the disk recovered", Duration::from_secs(20), || exec.is_finished()).await;
    let all = stored(&exec).await;
    assert!(all == seq(1, 4000), "the output after the failure is missing or doubled ({} bytes)", all.len());
    let result = exec.result().unwrap();
    assert_eq!(result.exit_code, Some(0), "{result:?}");
    assert_eq!(result.output_end, all.len() as u64);
    // The pump logs the recovery once the store succeeded, which is also when the result becomes visible: the line
    // may come a moment after `is_finished`.
    until("the recovery is logged", Duration::from_secs(5), || log_text().contains("storing works again")).await;
}

#[tokio::test]
async fn a_full_disk_keeps_the_output_so_far_and_the_rest_arrives_once_it_has_space() {
    output_survives(Fault::disk_full(&[Area::Log]), false).await;
}

#[tokio::test]
async fn failing_fsyncs_acknowledge_nothing_and_the_rest_arrives_once_they_work() {
    output_survives(Fault::fsync_fails(&[Area::Log]), true).await;
}

#[tokio::test]
async fn a_full_disk_refuses_new_executions_clearly_and_holds_results_until_it_has_space() {
    let r = runner().await;
    let go = r.dir.path().join("go");
    let script = format!("echo before; while [ ! -e {} ]; do sleep 0.02; done; echo after", go.display());
    let req =
        pb::ExecRequest { box_id: "b1".into(), argv: vec!["sh".into(), "-c".into(), script], ..Default::default() };
    let id = r.mgr.exec(req).await.unwrap().execution_id;
    let exec = r.mgr.execution(&id).unwrap();
    until("the first line stored", Duration::from_secs(20), || exec.log.position().end == 7).await;

    r.storage.inject(Fault::disk_full(&[Area::Log, Area::Records]));
    // A new execution cannot be recorded: refused with the reason, and nothing of it is left.
    let req = pb::ExecRequest { box_id: "b1".into(), argv: vec!["true".into()], ..Default::default() };
    let err = r.mgr.exec(req).await.unwrap_err();
    let status: tonic::Status = err.into();
    assert_eq!(status.code(), tonic::Code::Internal);
    assert!(status.message().contains("No space left on device"), "{status:?}");
    assert_eq!(r.mgr.inventory().boxes[0].executions.len(), 1, "the refused execution is still listed");
    let dirs = std::fs::read_dir(r.dir.path().join("boxes/b1/executions")).unwrap().count();
    assert_eq!(dirs, 1, "the refused execution left a directory");
    // The running one ends meanwhile: its output and result wait for the disk.
    std::fs::write(&go, b"").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!exec.is_finished());
    assert!(stored(&exec).await == b"before\n");

    r.storage.clear();
    until("the result stored after the disk recovered", Duration::from_secs(20), || exec.is_finished()).await;
    assert!(stored(&exec).await == b"before\nafter\n");
    assert_eq!(exec.result().unwrap().exit_code, Some(0));
    let req = pb::ExecRequest { box_id: "b1".into(), argv: vec!["true".into()], ..Default::default() };
    r.mgr.exec(req).await.expect("executions start again once the disk has space");
    assert!(Path::new(&r.dir.path().join("boxes/b1/executions").join(&id).join("result.json")).exists());
}
