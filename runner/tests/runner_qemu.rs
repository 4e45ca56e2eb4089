//! The runner API with real microVMs: output survives cut attaches and a `kill -9` of the runner; an execution that
//! finishes while the runner is down is complete; the VM outlives the runner and is re-adopted; stop and destroy end
//! the VM; files and stdin. On QEMU by default (TCG here, KVM where the host has hardware virtualization), and the
//! same tests again on the `kvm` backend (our own monitor) through [`common::rerun_on_kvm_backend`].

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod common;
mod harness;

use common::{backend_name, rerun_on_kvm_backend};

use std::time::Duration;

use boxyard_proto::runner as pb;
use harness::*;

fn vm_runner() -> RunnerProc {
    let guest = common::guest_image();
    let dir = guest.kernel.parent().unwrap().display().to_string();
    let mut args = common::runner_backend_args();
    args.extend([
        "--guest-dir".into(),
        dir,
        "--rootfs".into(),
        common::rootfs().display().to_string(),
        "--boot-timeout".into(),
        "120".into(),
    ]);
    RunnerProc::with_args(args)
}

/// The VM process (QEMU or boxyard-vmm) of box b1: the one whose command line names its agent socket.
fn vm_pid(r: &RunnerProc) -> Vec<i32> {
    pids_mentioning(&r.state.join("boxes/b1/vm/agent.sock").display().to_string())
}

#[tokio::test]
async fn vm_box_output_survives_cuts_and_runner_restarts() {
    let mut r = vm_runner();
    let mut c = r.client().await;
    let info = create_box(&mut c, "b1").await;
    assert_eq!(info.state, pb::BoxState::Running as i32, "{info:?}");
    assert!(info.backend.starts_with(common::backend_name()), "{info:?}");
    let vm = vm_pid(&r);
    assert_eq!(vm.len(), 1, "one VM process for the box");

    // ~9.5 MB on two interleaved streams; cut the attach every ~900 KB and kill -9 the runner half way.
    const N: u64 = 700_000;
    let expected = seq(N);
    let total = 2 * expected.len() as u64;
    let e = c.exec(sh("b1", &format!("seq 1 {N} & seq 1 {N} >&2; wait"))).await.unwrap().into_inner();
    let mut out = Reassembled::default();
    let mut next_cut = total / 11;
    let mut killed = false;
    while out.result.is_none() {
        let mut a = attach(&mut c, &e.execution_id, out.cursor).await.unwrap();
        while let Some(ev) = a.events.message().await.unwrap() {
            out.apply(ev);
            if out.cursor >= next_cut {
                next_cut += total / 11;
                break;
            }
        }
        drop(a);
        if !killed && out.cursor >= total / 2 && out.result.is_none() {
            killed = true;
            r.kill9();
            tokio::time::sleep(Duration::from_millis(500)).await;
            r.start();
            c = r.client().await;
            let b = c.get_box(pb::BoxRef { box_id: "b1".into() }).await.unwrap().into_inner();
            assert_eq!(b.state, pb::BoxState::Running as i32, "re-adopted after the restart: {b:?}");
            assert_eq!(vm_pid(&r), vm, "the same VM process runs on");
        }
    }
    assert!(killed, "the runner was never killed mid-execution");
    assert_eq!(out.exit_code(), Some(0));
    assert!(out.stdout == expected, "stdout differs ({} bytes)", out.stdout.len());
    assert!(out.stderr == expected, "stderr differs ({} bytes)", out.stderr.len());

    // An execution that finishes while the runner is down.
    let e = c.exec(sh("b1", "sleep 1; seq 1 50000; echo bye >&2; exit 3")).await.unwrap().into_inner();
    r.kill9();
    tokio::time::sleep(Duration::from_secs(4)).await;
    r.start();
    let mut c = r.client().await;
    let out = collect(&mut c, &e.execution_id, 0).await;
    assert_eq!(out.exit_code(), Some(3));
    assert!(out.stdout == seq(50_000));
    assert_eq!(out.stderr, b"bye\n");

    // Stop powers the VM off; destroy deletes the box.
    let b = c.stop_box(pb::StopBoxRequest { box_id: "b1".into(), timeout_ms: 20_000 }).await.unwrap().into_inner();
    assert_eq!(b.state, pb::BoxState::Stopped as i32);
    assert!(vm_pid(&r).is_empty(), "the VM process still runs after StopBox");
    assert!(c.destroy_box(pb::BoxRef { box_id: "b1".into() }).await.unwrap().into_inner().existed);
    assert!(!r.state.join("boxes/b1").exists());
}

#[tokio::test]
async fn vm_box_files_and_stdin() {
    let r = vm_runner();
    let mut c = r.client().await;
    create_box(&mut c, "b1").await;
    // Upload a tar with one file, read it back through an execution, download it again.
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append_data(&mut h, "hello.txt", &b"hi vm"[..]).unwrap();
    let data = tar.into_inner().unwrap();
    let chunks = vec![pb::UploadChunk { box_id: "b1".into(), dest_dir: "/tmp/up".into(), data }];
    let r1 = c.upload_files(tokio_stream::iter(chunks)).await.unwrap().into_inner();
    assert_eq!(r1.entries, 1);
    let e = c.exec(exec_req("b1", &["cat", "/tmp/up/hello.txt"])).await.unwrap().into_inner();
    assert_eq!(collect(&mut c, &e.execution_id, 0).await.stdout, b"hi vm");
    let mut s = c
        .download_files(pb::DownloadRequest { box_id: "b1".into(), path: "/tmp/up/hello.txt".into() })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(ch) = s.message().await.unwrap() {
        got.extend_from_slice(&ch.data);
    }
    let mut ar = tar::Archive::new(&got[..]);
    let mut entry = ar.entries().unwrap().next().unwrap().unwrap();
    let mut content = String::new();
    std::io::Read::read_to_string(&mut entry, &mut content).unwrap();
    assert_eq!(content, "hi vm");

    // stdin through Attach in the VM.
    let mut req = exec_req("b1", &["sh", "-c", "tr a-z A-Z"]);
    req.stdin = true;
    let e = c.exec(req).await.unwrap().into_inner();
    let mut a = attach(&mut c, &e.execution_id, 0).await.unwrap();
    a.input
        .send(pb::AttachRequest {
            msg: Some(pb::attach_request::Msg::Stdin(pb::StdinData {
                data: b"box\n".to_vec(),
                eof: true,
                offset: None,
            })),
        })
        .await
        .unwrap();
    let mut out = Reassembled::default();
    out.drain(&mut a).await.unwrap();
    assert_eq!(out.stdout, b"BOX\n");
}

/// The tests above, again on the `kvm` backend (boxyard-vmm): directly where the host has hardware virtualization,
/// inside the nested-KVM harness here.
#[test]
fn the_runner_vm_tests_pass_on_the_kvm_backend() {
    if backend_name() == "kvm" {
        eprintln!("already on the kvm backend: nothing to rerun");
        return;
    }
    rerun_on_kvm_backend(&["vm_box_output_survives_cuts_and_runner_restarts", "vm_box_files_and_stdin"], 3072, 540);
}
