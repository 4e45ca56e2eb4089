//! The `kvm` backend (our own monitor, boxyard-vmm) with real VMs: a command through the agent, pause and resume
//! and the counters through the VMM's control socket, re-adoption by pid file, the graceful stop (power button →
//! clean power-off → the VMM exits 0), the backend's kill, and a VMM killed under the runner; each VMM runs jailed
//! (own uid/gid from the backend's pool, empty root, no_new_privs, seccomp) in its own cgroup v2 with the limits the
//! backend computes, removed once the VM ended.
//!
//! It re-runs itself with `BOXYARD_TEST_VM_BACKEND=kvm`: directly where the CPU has hardware virtualization, inside
//! the nested-KVM harness (`scripts/nested-kvm.sh`) elsewhere. It needs `boxyard-vmm` built into the same target
//! directory (`cargo build --workspace` does) and fails, naming the fix, without it or without QEMU.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use boxyard_proto::agent::PingRequest;
use boxyard_runner::launch::launch;
use boxyard_runner::vm::cgroup::CgroupRoot;
use boxyard_runner::vm::kvm::KvmBackend;
use boxyard_runner::vm::{VmBackend, VmStatus};
use common::*;

const NAME: &str = "kvm_backend_runs_commands_is_adopted_stops_gracefully_and_reports_a_kill";

/// Kills the VMM of `dir` when dropped (a failing test must not leave VMs behind).
struct KillOnDrop(PathBuf);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.0.join("vmm.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            // SAFETY: plain kill(2) of the test's own VMM process.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvm_backend_runs_commands_is_adopted_stops_gracefully_and_reports_a_kill() {
    if backend_name() != "kvm" {
        // Each attempt gets 270 s; L1 boots once more when it hung or failed (L1 under TCG sometimes does).
        tokio::task::spawn_blocking(|| rerun_on_kvm_backend(&[NAME], 2048, 270)).await.unwrap();
        return;
    }
    let mut backend = KvmBackend::new(vmm_binary());
    assert_eq!(backend.name(), "kvm");
    // The jail and cgroups as `serve` sets them up (L1 has cgroup v2, see scripts/nested-kvm.sh), under a root of
    // the test's own.
    let cg_root = PathBuf::from(format!("/sys/fs/cgroup/boxyard-test-{}", std::process::id()));
    backend.cgroups = Some(CgroupRoot::prepare(Some(&cg_root)).expect("cgroup v2 with memory, cpu, pids"));
    let _cg_guard = RemoveOnDrop(cg_root.clone());

    // A box: a command through the agent.
    let dir = tempfile::Builder::new().prefix("boxyard-kvm-").tempdir().unwrap();
    let _guard = KillOnDrop(dir.path().to_path_buf());
    let disk = dir.path().join("rw.ext4");
    boxyard_runner::disk::create_ext4(&disk, 256 << 20).await.unwrap();
    let s = spec(dir.path(), "kvm1", Some(disk));
    let mut l = launch(&backend, s.clone(), Duration::from_secs(180)).await.unwrap();
    let c = run(&mut l.agent, req(&["sh", "-c", "echo hello; echo data > /root/f; cat /root/f; exit 3"])).await;
    assert_eq!((c.stdout_str().as_str(), code(&c)), ("hello\ndata\n", Some(3)));
    let VmStatus::Running { pid } = l.vm.status().await else { panic!("not running: {:?}", l.vm.status().await) };
    let id = boxyard_runner::vm::ids::read_id(&s.run_dir).expect("the VM's id is recorded in its run directory");
    assert!(boxyard_runner::vm::ids::DEFAULT_RANGE.contains(&id));
    assert_jailed(pid, id);
    let cg = assert_cgroup(pid, &cg_root, "vm-kvm1", "603979776", "100000 100000", "25");

    // Pause: the guest executes nothing, so the agent does not answer; after resume it does.
    l.vm.pause().await.unwrap();
    let frozen = tokio::time::timeout(Duration::from_secs(2), l.agent.ping(PingRequest {})).await;
    assert!(frozen.is_err(), "the agent answered while the VM was paused: {frozen:?}");
    l.vm.resume().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), l.agent.ping(PingRequest {}))
        .await
        .expect("the agent answers again after resume")
        .unwrap();
    let m = l.vm.metrics().await.unwrap();
    let get = |k: &str| m.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    assert!(get("block_read_bytes").unwrap_or(0) > 0, "the guest read its disks: {m:?}");
    assert_eq!(get("pauses"), Some(1), "{m:?}");

    // A restarted runner re-adopts the VMM by its pid file.
    let mut adopted = backend.adopt(s.clone()).await.unwrap().expect("the running VMM is adopted");
    assert_eq!(adopted.status().await, VmStatus::Running { pid });

    // Graceful stop: the power button, the agent's clean power-off, exit status 0.
    let status = l.vm.stop(Duration::from_secs(60)).await.unwrap();
    let vmm_log = || std::fs::read_to_string(s.run_dir.join("vmm.log")).unwrap_or_default();
    assert_eq!(status, VmStatus::Stopped { detail: "exit status: 0".into() }, "vmm.log:\n{}", vmm_log());
    assert!(matches!(adopted.wait(Duration::from_secs(5)).await, VmStatus::Stopped { .. }));
    let console = std::fs::read_to_string(s.console_log()).unwrap_or_default();
    assert!(console.contains("reboot: Power down"), "{console}");
    assert!(backend.adopt(s).await.unwrap().is_none(), "nothing to adopt after the VM ended");
    assert!(!cg.exists(), "the VM's cgroup is removed once it ended");
    assert_eq!(backend.jail.as_ref().unwrap().in_use(), 0, "its id is released");

    // The backend's kill (the control socket's kill: the VMM ends at once, exit status 3).
    let dir = tempfile::Builder::new().prefix("boxyard-kvm-").tempdir().unwrap();
    let _guard3 = KillOnDrop(dir.path().to_path_buf());
    let mut l = launch(&backend, spec(dir.path(), "kvm3", None), Duration::from_secs(180)).await.unwrap();
    assert_eq!(l.vm.kill().await.unwrap(), VmStatus::Stopped { detail: "exit status: 3".into() });
    assert!(!dir.path().join("ctl.sock").exists() && !dir.path().join("vmm.pid").exists(), "cleaned up");

    // The command line: `vm run --backend kvm` prints the command's output and exits with its status; `auto` (the
    // default) picks kvm here (QEMU is named as /bin/false, so a QEMU boot could not succeed).
    for backend_arg in [&["--backend", "kvm"][..], &["--qemu", "/bin/false"][..]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_boxyard-runner"))
            .args(["vm", "run", "--vmm-binary"])
            .arg(vmm_binary())
            .arg("--guest-dir")
            .arg(guest_image().kernel.parent().unwrap())
            .arg("--rootfs")
            .arg(rootfs())
            .args(backend_arg)
            .args(["--", "sh", "-c", "echo hello; exit 3"])
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!((stdout.as_ref(), out.status.code()), ("hello\n", Some(3)), "{backend_arg:?}: {stderr}");
    }

    // A VMM killed under the runner is reported stopped, with the signal.
    let dir = tempfile::Builder::new().prefix("boxyard-kvm-").tempdir().unwrap();
    let _guard2 = KillOnDrop(dir.path().to_path_buf());
    let mut l = launch(&backend, spec(dir.path(), "kvm2", None), Duration::from_secs(180)).await.unwrap();
    let VmStatus::Running { pid } = l.vm.status().await else { panic!("second VM not running") };
    let id2 = boxyard_runner::vm::ids::read_id(&l.vm.spec().run_dir).unwrap();
    assert_eq!(id2, id, "the first VM's id was released, so the lowest id is handed out again");
    assert_jailed(pid, id2);
    let cg = assert_cgroup(pid, &cg_root, "vm-kvm2", "603979776", "100000 100000", "25");
    // SAFETY: kill(2) of the test's own VMM.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    match l.vm.wait(Duration::from_secs(10)).await {
        VmStatus::Stopped { detail } => assert!(detail.contains("signal: 9"), "{detail}"),
        other => panic!("killed VMM reported {other:?}"),
    }
    assert!(!cg.exists(), "the killed VM's cgroup is removed");
}

/// Removes the test's cgroup root (and VM cgroups left by a failure) when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir(&self.0) {
            for e in rd.flatten().filter(|e| e.path().is_dir()) {
                let _ = std::fs::remove_dir(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The running VMM `pid` is jailed as `id`: its ids, no_new_privs, seccomp, and a root with nothing in it.
fn assert_jailed(pid: u32, id: u32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).unwrap_or("").split_whitespace().collect::<Vec<_>>()
    };
    let id = id.to_string();
    assert_eq!(field("Uid:"), vec![id.as_str(); 4], "{status}");
    assert_eq!(field("Gid:"), vec![id.as_str(); 4], "{status}");
    assert!(field("Groups:").is_empty(), "{status}");
    assert_eq!((field("NoNewPrivs:"), field("Seccomp:")), (vec!["1"], vec!["2"]), "{status}");
    let root: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/root")).unwrap().collect();
    assert!(root.is_empty(), "the VMM's root shows {root:?}");
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    assert_eq!(mounts.lines().count(), 1, "only the jail's root is mounted:\n{mounts}");
}

/// The running VMM `pid` is in `root/name` with these limits; returns the cgroup's directory.
fn assert_cgroup(pid: u32, root: &std::path::Path, name: &str, memory: &str, cpu: &str, pids: &str) -> PathBuf {
    let rel = root.strip_prefix("/sys/fs/cgroup").unwrap().join(name);
    let line = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(line.trim(), format!("0::/{}", rel.display()), "the VMM's cgroup");
    let dir = root.join(name);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap().trim().to_string();
    assert_eq!((read("memory.max"), read("cpu.max"), read("pids.max")), (memory.into(), cpu.into(), pids.into()));
    // The VMM's memory (guest RAM it touched included) is charged there.
    let current: u64 = read("memory.current").parse().unwrap();
    assert!(current > 16 << 20, "memory.current {current}");
    dir
}
