//! The runner reads the state directories that earlier releases wrote: a committed fixture in the record format
//! before versions (`fixtures/state-v1`) is opened by the current runner, which re-adopts its box, serves its
//! execution's output and result, and writes records back with a version. A record from a newer runner is left
//! alone with an error naming its version.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::path::Path;
use std::sync::Arc;

use boxyard_proto::runner as pb;
use boxyard_runner::boxes::BoxManager;
use boxyard_runner::boxes::record::BoxRecord;
use boxyard_runner::config::RunnerConfig;
use boxyard_runner::execlog::Item;
use boxyard_runner::executions::{ExecMeta, ExecResult};
use boxyard_runner::store::{self, Record};
use boxyard_runner::vm::local::LocalBackend;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-v1")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A state directory holding a copy of the fixture.
fn state() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), tmp.path());
    tmp
}

async fn open(state: &Path) -> Arc<BoxManager> {
    // No VM is running for the fixture's box: the backend is only asked to adopt, which finds no process.
    let backend = Arc::new(LocalBackend { guest_binary: "/nonexistent/boxyard-guest".into() });
    let mut config = RunnerConfig::new(state.to_path_buf());
    // The fixture's execution finished long ago: keep it from garbage collection.
    config.finished_ttl = std::time::Duration::from_secs(100 * 365 * 24 * 3600);
    BoxManager::open(config, backend).await.unwrap()
}

/// JSON without its `version` field.
fn unversioned(data: &[u8]) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(data).unwrap();
    v.as_object_mut().unwrap().remove("version");
    v
}

#[test]
fn the_fixture_is_the_current_writers_format_without_a_version() {
    // Each fixture record, read and written again by the current writer, differs only by the version it gains.
    fn check<T: Record>(path: &Path) {
        let data = std::fs::read(path).unwrap();
        let record: T = store::decode_record(path, &data).unwrap();
        let written = store::encode_record(&record).unwrap();
        assert_eq!(unversioned(&written), unversioned(&data), "{} is not in the current format", path.display());
        let v: serde_json::Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(v["version"], T::VERSION);
    }
    let b = fixture().join("boxes/b1");
    check::<BoxRecord>(&b.join("box.json"));
    check::<ExecMeta>(&b.join("executions/ex-fixture/exec.json"));
    check::<ExecResult>(&b.join("executions/ex-fixture/result.json"));
}

#[tokio::test]
async fn a_state_directory_of_the_release_before_versions_is_re_adopted() {
    let tmp = state();
    let mgr = open(tmp.path()).await;
    let inv = mgr.inventory();
    assert_eq!(inv.boxes.len(), 1, "{inv:?}");
    let b = &inv.boxes[0];
    assert_eq!(b.box_id, "b1");
    assert_eq!(b.created_unix_ms, 1_764_500_000_000);
    let spec = b.spec.clone().unwrap();
    assert_eq!((spec.vcpus, spec.memory_mib, spec.disk_mib), (1, 512, 1024));
    assert_eq!(spec.env.get("GREETING").map(String::as_str), Some("hi"));
    // It should run, but no VM outlived the old runner.
    assert_eq!(b.state, pb::BoxState::Stopped as i32);
    assert!(b.reason.contains("while the runner was not running"), "{b:?}");

    let e = mgr.execution("ex-fixture").unwrap();
    let info = e.to_proto();
    assert_eq!(info.state, pb::ExecutionState::Finished as i32);
    assert_eq!((info.output_start, info.output_end), (0, 14));
    let result = info.result.unwrap();
    assert_eq!(result.outcome, Some(pb::execution_result::Outcome::ExitCode(0)));
    let items = tokio::task::spawn_blocking(move || e.log.reader(0).read(1 << 20).unwrap()).await.unwrap();
    let data = |stream: u8, cursor: u64, d: &[u8]| Item::Data { stream, cursor, data: d.to_vec() };
    assert_eq!(items, vec![data(1, 0, b"hello\n"), data(2, 6, b"err\n"), data(1, 10, b"bye\n")]);

    // A change is written back as the newest version.
    mgr.stop_box("b1", std::time::Duration::from_secs(1)).await.unwrap();
    let record = tmp.path().join("boxes/b1/box.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(v["version"], BoxRecord::VERSION);
    assert_eq!(v["desired_running"], false);
    drop(mgr);
    // And read back by the next runner.
    let mgr = open(tmp.path()).await;
    assert_eq!(mgr.get_box("b1").unwrap().state, pb::BoxState::Stopped as i32);
    assert_eq!(mgr.execution("ex-fixture").unwrap().to_proto().output_end, 14);
}

#[tokio::test]
async fn a_box_written_by_a_newer_runner_is_left_alone() {
    let tmp = state();
    let b2 = tmp.path().join("boxes/b2");
    copy_dir(&tmp.path().join("boxes/b1"), &b2);
    let record = b2.join("box.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    v["box_id"] = "b2".into();
    v["version"] = 99.into();
    std::fs::write(&record, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let before = std::fs::read(&record).unwrap();

    let err = store::read_record::<BoxRecord>(&record).unwrap_err().to_string();
    assert!(err.contains("version 99") && err.contains("upgrade this runner"), "{err}");

    let mgr = open(tmp.path()).await;
    // The box it cannot read is not served, and not touched: its record and its executions stay as they are.
    assert!(mgr.get_box("b2").is_err());
    assert_eq!(mgr.get_box("b1").unwrap().box_id, "b1");
    assert_eq!(std::fs::read(&record).unwrap(), before);
    assert!(b2.join("executions/ex-fixture/log/00000000000000000000.seg").exists());
    // Its id cannot be taken over by a new box either.
    let err = mgr.create_box("b2", None).await.unwrap_err().to_string();
    assert!(err.contains("cannot read") && err.contains("version 99"), "{err}");
    assert_eq!(std::fs::read(&record).unwrap(), before);
}
