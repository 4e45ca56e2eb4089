//! Shared helpers of the runner's VM tests: real VMs booted from the artifacts of scripts/build-guest.sh and
//! scripts/build-rootfs.sh (scripts/test.sh builds them first), on the backend `BOXYARD_TEST_VM_BACKEND` names
//! (`qemu`, the default, or `kvm`: our own monitor), and [`rerun_on_kvm_backend`], which runs a test binary's VM
//! tests again on the `kvm` backend (directly where the CPU has hardware virtualization, otherwise inside the
//! nested-KVM harness, `scripts/nested-kvm.sh`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use boxyard_proto::agent::{ExecRequest, ShutdownRequest, exec_result::Outcome};
use boxyard_runner::agent::{Agent, Collected, collect};
use boxyard_runner::launch::{GuestImage, Launched, launch};
use boxyard_runner::vm::kvm::KvmBackend;
use boxyard_runner::vm::qemu::QemuBackend;
use boxyard_runner::vm::{VmBackend, VmSpec};

pub use boxyard_devstack::nested::backend_name;

/// `boxyard-vmm`, built into the same target directory as the test binaries (`cargo build --workspace`).
pub fn vmm_binary() -> PathBuf {
    // The test binary is target/<profile>/deps/<name>; the VMM is target/<profile>/boxyard-vmm.
    let p = std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join("boxyard-vmm");
    assert!(p.is_file(), "no boxyard-vmm at {} (cargo build --workspace builds it)", p.display());
    p
}

/// The backend of [`backend_name`].
pub fn backend() -> Box<dyn VmBackend> {
    match backend_name() {
        "kvm" => Box::new(KvmBackend::new(vmm_binary())),
        _ => Box::new(QemuBackend::detect()),
    }
}

/// The runner's `--backend ...` arguments for [`backend_name`].
pub fn runner_backend_args() -> Vec<String> {
    match backend_name() {
        "kvm" => vec!["--backend".into(), "kvm".into(), "--vmm-binary".into(), vmm_binary().display().to_string()],
        _ => vec!["--backend".into(), "qemu".into()],
    }
}

/// Runs `tests` of this test binary again on the `kvm` backend (see `boxyard_devstack::nested`).
pub fn rerun_on_kvm_backend(tests: &[&str], l1_mem_mib: u32, timeout_s: u32) {
    let rerun = boxyard_devstack::nested::Rerun { tests, l1_mem_mib, timeout_s };
    boxyard_devstack::nested::rerun_on_kvm_backend(&workspace(), &rerun);
}

pub fn workspace() -> PathBuf {
    boxyard_devstack::paths::workspace()
}

pub fn guest_image() -> GuestImage {
    let dir = std::env::var_os("BOXYARD_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("build/guest/current"));
    let image = GuestImage::from_dir(&dir);
    assert!(
        image.kernel.exists() && image.initramfs.exists(),
        "guest image missing in {}: run scripts/build-guest.sh (scripts/test.sh does)",
        dir.display()
    );
    image
}

pub fn rootfs() -> PathBuf {
    let p = std::env::var_os("BOXYARD_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("build/rootfs/busybox.ext4"));
    assert!(p.exists(), "root image missing at {}: run scripts/build-rootfs.sh (scripts/test.sh does)", p.display());
    p
}

/// A booted VM that is killed when dropped (even when a test fails half way).
pub struct TestVm {
    pub l: Option<Launched>,
    pub dir: tempfile::TempDir,
}

impl TestVm {
    pub fn agent(&mut self) -> &mut Agent {
        &mut self.l.as_mut().unwrap().agent
    }

    /// The guest's console (kernel messages and, with `boxyard.debug`, the agent's debug lines).
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log"))
            .unwrap_or_else(|e| format!("(no console log: {e})"))
    }

    /// Awaits `fut` for at most `limit`; past it the test fails naming `what`, with the guest's console.
    pub async fn within<T>(&self, limit: Duration, what: &str, fut: impl std::future::Future<Output = T>) -> T {
        match tokio::time::timeout(limit, fut).await {
            Ok(v) => v,
            Err(_) => panic!("{what}: nothing within {limit:?}; guest console:\n{}", self.console()),
        }
    }

    /// Powers off through the agent and waits for the VM to end.
    pub async fn shutdown(mut self) {
        let mut l = self.l.take().unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), l.agent.shutdown(ShutdownRequest {})).await;
        let status = l.vm.wait(Duration::from_secs(20)).await;
        assert!(matches!(status, boxyard_runner::vm::VmStatus::Stopped { .. }), "VM did not power off: {status:?}");
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        if self.l.is_none() {
            return;
        }
        for f in ["qemu.pid", "vmm.pid"] {
            if let Ok(pid) = std::fs::read_to_string(self.dir.path().join(f))
                && let Ok(pid) = pid.trim().parse::<i32>()
            {
                // SAFETY: plain kill(2) of the test's own VM process.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

pub fn spec(dir: &Path, id: &str, disk: Option<PathBuf>) -> VmSpec {
    let image = guest_image();
    VmSpec {
        id: id.into(),
        kernel: image.kernel,
        initramfs: image.initramfs,
        root_image: rootfs(),
        writable_disk: disk,
        vcpus: 1,
        memory_mib: 512,
        run_dir: dir.to_path_buf(),
        extra_kernel_args: vec!["boxyard.debug".into()],
    }
}

/// Boots a VM (with a fresh writable disk unless one is given).
pub async fn boot(id: &str, disk: Option<PathBuf>) -> TestVm {
    let dir = tempfile::Builder::new().prefix("boxyard-test-").tempdir().unwrap();
    let disk = match disk {
        Some(d) => d,
        None => {
            let d = dir.path().join("rw.ext4");
            boxyard_runner::disk::create_ext4(&d, 256 << 20).await.unwrap();
            d
        }
    };
    let spec = spec(dir.path(), id, Some(disk));
    let l = launch(&*backend(), spec, Duration::from_secs(120)).await.unwrap();
    TestVm { l: Some(l), dir }
}

pub fn req(argv: &[&str]) -> ExecRequest {
    ExecRequest { argv: argv.iter().map(|s| s.to_string()).collect(), ..Default::default() }
}

pub async fn run(a: &mut Agent, r: ExecRequest) -> Collected {
    let id = a.exec(r).await.unwrap().into_inner().exec_id;
    collect(a, &id).await.unwrap()
}

pub fn code(c: &Collected) -> Option<i32> {
    match c.result.as_ref()?.outcome {
        Some(Outcome::ExitCode(n)) => Some(n),
        _ => None,
    }
}
