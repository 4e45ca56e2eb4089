//! The guest agent inside real VMs: QEMU (TCG on hosts without hardware virtualization) by default, and the same
//! tests again on the `kvm` backend (our own monitor) through [`common::rerun_on_kvm_backend`].

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use boxyard_proto::agent::{
    DownloadRequest, PingRequest, ResizeRequest, SignalRequest, Tty, UploadChunk, WaitRequest, WriteStdinRequest,
    exec_result::Outcome,
};
use boxyard_runner::agent::{self, OutputEvent, OutputFollower, collect};
use common::*;

/// One VM, every kind of execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_in_a_vm() {
    let mut vm = boot("exec", None).await;
    let a = vm.agent();

    let ping = a.ping(PingRequest {}).await.unwrap().into_inner();
    assert!(ping.kernel_boot_ms > 0, "PID 1 reports the kernel's boot time: {ping:?}");
    assert!(ping.kernel_release.contains("cloud"), "{ping:?}");

    let c = run(a, req(&["echo", "hello"])).await;
    assert_eq!((c.stdout.as_slice(), code(&c)), (&b"hello\n"[..], Some(0)));

    let c = run(a, req(&["sh", "-c", "echo out; echo err >&2; exit 42"])).await;
    assert_eq!((c.stdout_str().as_str(), c.stderr_str().as_str(), code(&c)), ("out\n", "err\n", Some(42)));

    // stdin through cat, including EOF.
    let mut r = req(&["cat"]);
    r.stdin = true;
    let id = a.exec(r).await.unwrap().into_inner().exec_id;
    a.write_stdin(WriteStdinRequest { exec_id: id.clone(), offset: 0, data: b"piped\nbytes".to_vec(), eof: true })
        .await
        .unwrap();
    let c = collect(a, &id).await.unwrap();
    assert_eq!((c.stdout.as_slice(), code(&c)), (&b"piped\nbytes"[..], Some(0)));

    // env and working dir; the box's root filesystem is the overlay on the busybox image.
    let mut r = req(&["sh", "-c", "echo $FOO; pwd; cat /etc/hostname"]);
    r.env = HashMap::from([("FOO".to_string(), "bar baz".to_string())]);
    r.working_dir = "/tmp".into();
    assert_eq!(run(a, r).await.stdout_str(), "bar baz\n/tmp\nboxyard\n");

    // PID 1 reaps orphans: a background process whose parent exited must not stay a zombie.
    let c = run(a, req(&["sh", "-c", "(sleep 0.2 &); exit 0"])).await;
    assert_eq!(code(&c), Some(0));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let c = run(a, req(&["sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null | awk '$3 == \"Z\"' | wc -l"])).await;
    assert_eq!(c.stdout_str().trim(), "0", "zombies in the box: {}", c.stderr_str());

    // users from the box's /etc/passwd.
    let mut r = req(&["id", "-u"]);
    r.user = "box".into();
    assert_eq!(run(a, r).await.stdout_str(), "1000\n");

    // tty with resize.
    let mut r = req(&["sh", "-c", "stty size; read x; stty size"]);
    r.tty = Some(Tty { rows: 24, cols: 80 });
    r.stdin = true;
    let id = a.exec(r).await.unwrap().into_inner().exec_id;
    let mut f = OutputFollower::start(a, &id, 0).await.unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("24 80") {
        match f.next().await.unwrap().unwrap() {
            OutputEvent::Data { data, .. } => seen.extend(data),
            OutputEvent::Exit(r) => panic!("exited early {r:?}: {}", String::from_utf8_lossy(&seen)),
        }
    }
    drop(f);
    a.resize(ResizeRequest { exec_id: id.clone(), tty: Some(Tty { rows: 50, cols: 132 }) }).await.unwrap();
    a.write_stdin(WriteStdinRequest { exec_id: id.clone(), offset: 0, data: b"\n".to_vec(), eof: false })
        .await
        .unwrap();
    let c = collect(a, &id).await.unwrap();
    assert!(c.stdout_str().contains("50 132"), "{:?}", c.stdout_str());

    // A signal kills the process; the result names it.
    let id = a.exec(req(&["sleep", "600"])).await.unwrap().into_inner().exec_id;
    let err = a.signal(SignalRequest { exec_id: id.clone(), signal: "NOSUCHSIG".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    a.signal(SignalRequest { exec_id: id.clone(), signal: "KILL".into() }).await.unwrap();
    let r = a.wait(WaitRequest { exec_id: id }).await.unwrap().into_inner();
    assert_eq!(r.outcome, Some(Outcome::Signal("SIGKILL".into())));

    // Timeout.
    let mut r = req(&["sleep", "600"]);
    r.timeout_ms = 500;
    let res = run(a, r).await.result.unwrap();
    assert!(res.timed_out, "{res:?}");
    assert_eq!(res.outcome, Some(Outcome::Signal("SIGTERM".into())));

    // A command that does not exist: 127 with a message, not a hang.
    let c = run(a, req(&["definitely-not-a-command"])).await;
    assert_eq!(code(&c), Some(127));
    assert!(c.stderr_str().contains("command not found"), "{}", c.stderr_str());

    // Files: upload a tar, download it again, bytes identical.
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 11) as u8).collect();
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(payload.len() as u64);
    h.set_mode(0o600);
    t.append_data(&mut h, "blob.bin", payload.as_slice()).unwrap();
    let t = t.into_inner().unwrap();
    let chunks: Vec<UploadChunk> = t
        .chunks(128 * 1024)
        .enumerate()
        .map(|(i, c)| UploadChunk {
            dest_dir: if i == 0 { "/root/up".into() } else { String::new() },
            data: c.to_vec(),
        })
        .collect();
    a.upload_files(tokio_stream::iter(chunks)).await.unwrap();
    assert_eq!(
        run(a, req(&["wc", "-c", "/root/up/blob.bin"])).await.stdout_str().split_whitespace().next(),
        Some("1000000")
    );
    let mut s = a.download_files(DownloadRequest { path: "/root/up/blob.bin".into() }).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(c) = s.message().await.unwrap() {
        got.extend(c.data);
    }
    let mut ar = tar::Archive::new(got.as_slice());
    let mut e = ar.entries().unwrap().next().unwrap().unwrap();
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut e, &mut back).unwrap();
    assert!(back == payload, "downloaded file differs from the uploaded one");

    vm.shutdown().await;
}

/// Writes go to the box's writable disk: they survive a stop/start of the same box and are absent in a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_filesystem_writes_persist_per_box() {
    let keep = tempfile::tempdir().unwrap();
    let disk = keep.path().join("box-a.ext4");
    boxyard_runner::disk::create_ext4(&disk, 256 << 20).await.unwrap();

    let mut vm = boot("persist-1", Some(disk.clone())).await;
    let c = run(vm.agent(), req(&["sh", "-c", "echo kept > /etc/marker && echo more > /root/notes"])).await;
    assert_eq!(code(&c), Some(0), "{}", c.stderr_str());
    // A graceful stop through the platform (ACPI power button): the guest syncs and powers off by itself.
    let mut l = vm.l.take().unwrap();
    let status = l.vm.stop(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        status,
        boxyard_runner::vm::VmStatus::Stopped { detail: "exit status: 0".into() },
        "not a clean power-off"
    );

    let mut vm = boot("persist-2", Some(disk.clone())).await;
    let c = run(vm.agent(), req(&["cat", "/etc/marker", "/root/notes"])).await;
    assert_eq!(c.stdout_str(), "kept\nmore\n");
    vm.shutdown().await;

    let mut fresh = boot("persist-fresh", None).await;
    let c = run(fresh.agent(), req(&["sh", "-c", "test -e /etc/marker; echo $?"])).await;
    assert_eq!(c.stdout_str(), "1\n", "a fresh box must not see another box's writes");
    fresh.shutdown().await;
}

/// The host closes the agent socket while a command streams, reconnects through QEMU, and resumes from its cursor:
/// the concatenated output is exactly `seq 1 200000`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_disconnect_mid_stream_loses_nothing() {
    let mut vm = boot("disconnect", None).await;
    let socket = vm.l.as_ref().unwrap().vm.spec().agent_socket();
    let expected: String = (1..=200_000).map(|i| format!("{i}\n")).collect();
    let id = vm.agent().exec(req(&["seq", "1", "200000"])).await.unwrap().into_inner().exec_id;

    let mut got = Vec::new();
    let mut cursor = 0u64;
    let mut cuts = 0;
    let mut client = vm.agent().clone();
    // Every wait is bounded: a stalled channel fails with the guest's console log instead of hanging the suite.
    let step = Duration::from_secs(60);
    let result = loop {
        let mut f = vm.within(step, "open Output", OutputFollower::start(&mut client, &id, cursor)).await.unwrap();
        let mut here = 0;
        let end = loop {
            match vm.within(step, &format!("output after cursor {} (cut {cuts})", f.cursor), f.next()).await {
                Ok(Some(OutputEvent::Data { data, .. })) => {
                    here += data.len();
                    got.extend(data);
                    f.ack(f.cursor).await;
                    if cuts < 4 && here > 150_000 {
                        break None;
                    }
                }
                Ok(Some(OutputEvent::Exit(r))) => break Some(r),
                other => panic!("unexpected end of stream: {other:?}"),
            }
        };
        cursor = f.cursor;
        if let Some(r) = end {
            break r;
        }
        // Close every handle on the socket (QEMU's chardev and the guest see the host go away), then reconnect.
        drop(f);
        drop(client);
        let launched = vm.l.as_mut().unwrap();
        let placeholder = boxyard_proto::agent::agent_client::AgentClient::new(
            tonic::transport::Endpoint::from_static("http://unused.invalid").connect_lazy(),
        );
        drop(std::mem::replace(&mut launched.agent, placeholder));
        cuts += 1;
        let agent = agent::connect(&socket, Duration::from_secs(30)).await;
        let launched = vm.l.as_mut().unwrap();
        launched.agent = agent.unwrap_or_else(|e| panic!("reconnect {cuts}: {e}"));
        client = launched.agent.clone();
    };
    assert_eq!(cuts, 4);
    assert_eq!(result.outcome, Some(Outcome::ExitCode(0)));
    assert_eq!(got.len(), expected.len(), "byte count differs");
    assert!(got == expected.as_bytes(), "reassembled output differs from seq 1 200000");
    vm.shutdown().await;
}

/// Bad paths are refused before anything starts, naming what is missing and how to get it.
#[tokio::test]
async fn missing_kernel_or_rootfs_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let backend = backend();
    let mut s = spec(dir.path(), "bad", None);
    s.kernel = "/nonexistent/vmlinuz".into();
    let err = backend.create(s).await.err().expect("a missing kernel must be refused").to_string();
    assert!(err.contains("kernel not found at /nonexistent/vmlinuz") && err.contains("build-guest.sh"), "{err}");
    let mut s = spec(dir.path(), "bad", None);
    s.root_image = "/nonexistent/root.ext4".into();
    let err = backend.create(s).await.err().expect("a missing rootfs must be refused").to_string();
    assert!(err.contains("root image not found") && err.contains("build-rootfs.sh"), "{err}");
    let mut s = spec(dir.path(), "bad", None);
    s.memory_mib = 1;
    assert!(backend.create(s).await.is_err());
}

/// The KVM path needs hardware virtualization: ignored by default (most CI hosts have none); scripts/test.sh runs it
/// where /dev/kvm opens, and run by hand (`--run-ignored only`) it fails on a host without KVM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs hardware virtualization (KVM); scripts/test.sh runs it where /dev/kvm is usable"]
async fn boots_with_kvm_acceleration_when_available() {
    if let Some(why) = boxyard_runner::hostcaps::why_no_hardware_virtualization() {
        panic!("this host cannot run the KVM test: {why}");
    }
    let backend = boxyard_runner::vm::qemu::QemuBackend::detect();
    assert_eq!(backend.accel, boxyard_runner::vm::qemu::Accel::Kvm);
    let mut vm = boot("kvm", None).await;
    assert_eq!(run(vm.agent(), req(&["echo", "kvm"])).await.stdout_str(), "kvm\n");
    vm.shutdown().await;
}

/// The tests above that boot VMs, again on the `kvm` backend (boxyard-vmm): directly where the host has hardware
/// virtualization, inside the nested-KVM harness here.
#[test]
fn the_vm_tests_pass_on_the_kvm_backend() {
    if backend_name() == "kvm" {
        eprintln!("already on the kvm backend: nothing to rerun");
        return;
    }
    rerun_on_kvm_backend(
        &[
            "commands_run_in_a_vm",
            "root_filesystem_writes_persist_per_box",
            "host_disconnect_mid_stream_loses_nothing",
            "missing_kernel_or_rootfs_is_a_clear_error",
        ],
        3072,
        540,
    );
}
