//! The `kvm` backend (our own monitor, boxyard-vmm) with real VMs: a command through the agent, re-adoption by pid
//! file, the graceful stop (power button → clean power-off → the VMM exits 0), and a VMM killed under the runner.
//!
//! Runs directly where the CPU has hardware virtualization and inside the nested-KVM harness (BOXYARD_NESTED=1);
//! elsewhere it re-runs itself inside `scripts/nested-kvm.sh`. It needs `boxyard-vmm` built into the same target
//! directory (`cargo build --workspace` does) and reports a visible skip without it or without QEMU.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use boxyard_runner::launch::launch;
use boxyard_runner::vm::kvm::KvmBackend;
use boxyard_runner::vm::{VmBackend, VmStatus};
use common::*;

const NAME: &str = "kvm_backend_runs_commands_is_adopted_stops_gracefully_and_reports_a_kill";

fn vmm_binary() -> Option<PathBuf> {
    // The test binary is target/<profile>/deps/<name>; the VMM is target/<profile>/boxyard-vmm.
    let p = std::env::current_exe().ok()?.parent()?.parent()?.join("boxyard-vmm");
    p.is_file().then_some(p)
}

fn hardware_kvm() -> bool {
    std::path::Path::new("/dev/kvm").exists() && boxyard_runner::hostcaps::hardware_virtualization()
}

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

fn run_nested() {
    // scripts/setup.sh installs QEMU: without it this host cannot run the test, which is a failure, not a pass.
    assert!(
        Command::new("qemu-system-x86_64").arg("--version").stdout(Stdio::null()).status().is_ok(),
        "{NAME}: no hardware KVM and no qemu-system-x86_64 for the nested-KVM harness (run scripts/setup.sh)"
    );
    // Each attempt gets 270 s; --retry boots L1 once more when it hung or failed (L1 under TCG sometimes does).
    let out = Command::new("bash")
        .arg(workspace().join("scripts/nested-kvm.sh"))
        .args(["--timeout", "270", "--retry", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .current_dir(workspace())
        .output()
        .expect("running scripts/nested-kvm.sh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("---- inside the nested-KVM harness ----\n{text}---- end ----");
    assert!(out.status.success(), "{NAME} failed inside the nested-KVM harness ({:?})", out.status);
    assert!(text.contains("test result: ok. 1 passed"), "the test did not run inside the harness");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvm_backend_runs_commands_is_adopted_stops_gracefully_and_reports_a_kill() {
    let binary = vmm_binary().unwrap_or_else(|| {
        panic!("{NAME}: no boxyard-vmm beside the test binaries (cargo build --workspace builds it)")
    });
    if !hardware_kvm() && std::env::var_os("BOXYARD_NESTED").is_none() {
        tokio::task::spawn_blocking(run_nested).await.unwrap();
        return;
    }
    let backend = KvmBackend { binary };
    assert_eq!(backend.name(), "kvm");

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

    // A VMM killed under the runner is reported stopped, with the signal.
    let dir = tempfile::Builder::new().prefix("boxyard-kvm-").tempdir().unwrap();
    let _guard2 = KillOnDrop(dir.path().to_path_buf());
    let mut l = launch(&backend, spec(dir.path(), "kvm2", None), Duration::from_secs(180)).await.unwrap();
    let VmStatus::Running { pid } = l.vm.status().await else { panic!("second VM not running") };
    // SAFETY: kill(2) of the test's own VMM.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    match l.vm.wait(Duration::from_secs(10)).await {
        VmStatus::Stopped { detail } => assert!(detail.contains("signal: 9"), "{detail}"),
        other => panic!("killed VMM reported {other:?}"),
    }
}
