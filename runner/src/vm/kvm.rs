//! The `kvm` backend: one `boxyard-vmm` process (our own KVM monitor, `vmm/`) per VM.
//!
//! - Devices and files match the QEMU backend's: the read-only root disk (`boxyard-root`), the writable disk
//!   (`boxyard-rw`), the agent port `boxyard.agent` as `run_dir/agent.sock` (the VMM listens), the serial console in
//!   `run_dir/console.log`; the VMM's own messages go to `run_dir/vmm.log`, its pid to `run_dir/vmm.pid`.
//! - The VMM is driven through its control socket `run_dir/ctl.sock` ([`super::vmm_control`]): `stop` presses the
//!   guest's ACPI power button (the VMM exits 0 after the clean power-off), `kill` ends it at once, `pause`/`resume`
//!   stop and restart the vCPUs, `metrics` reads its counters. Where the socket does not answer, SIGTERM is the
//!   graceful stop and SIGKILL the kill.
//! - The VMM runs in its own session, so it outlives the runner, which re-adopts it by pid file (the pid is trusted
//!   only while the process's command line names the VM's run directory, which `--pid-file` puts there).
//! - The jail: each VMM runs as its own unprivileged uid/gid from [`IdPool`] (`--jail-uid`; the VMM opens every file
//!   as root, then drops, so no file needs a chown), in its own mount namespace with an empty root (the VMM's
//!   `jail.rs`), and, unless disabled, in its own cgroup v2 with memory, CPU and task limits ([`CgroupRoot`]), which
//!   it joins before exec and which is removed once it has ended.
//! - Only for hosts with hardware virtualization: a software /dev/kvm cannot boot a stock kernel (see hostcaps).

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Command;

use super::cgroup::{CgroupRoot, Limits, VmCgroup};
use super::ids::{self, IdPool};
use super::process::{VmProcess, read_pid_file, slot_status};
use super::qemu::cmdline::BASE_KERNEL_ARGS;
use super::vmm_control::{self, REQUEST_TIMEOUT};
use super::{Vm, VmBackend, VmError, VmSpec, VmStatus};

/// Creates `boxyard-vmm` VMs.
#[derive(Clone, Debug)]
pub struct KvmBackend {
    /// The `boxyard-vmm` binary.
    pub binary: PathBuf,
    /// The ids VMMs run as; None: `--no-jail` (development only: the VMM runs as root and sees the host).
    pub jail: Option<IdPool>,
    /// Where VM cgroups go; None: VMs run without cgroup limits.
    pub cgroups: Option<CgroupRoot>,
}

impl KvmBackend {
    /// `binary`, jailed with ids from [`ids::DEFAULT_RANGE`], without cgroups.
    pub fn new(binary: PathBuf) -> Self {
        KvmBackend { binary, jail: Some(IdPool::new(ids::DEFAULT_RANGE)), cgroups: None }
    }

    /// `boxyard-vmm` beside the running executable, if it is there (as [`KvmBackend::new`]).
    pub fn beside_current_exe() -> Option<Self> {
        let p = std::env::current_exe().ok()?.with_file_name("boxyard-vmm");
        p.is_file().then(|| Self::new(p))
    }
}

/// The VMM's arguments for `spec`, jailed as `jail_id` (uid and gid) or `--no-jail` (a pure function, tested
/// without KVM).
pub fn args(spec: &VmSpec, jail_id: Option<u32>) -> Vec<String> {
    let mut kernel_args: Vec<String> = BASE_KERNEL_ARGS.iter().map(|s| s.to_string()).collect();
    // Every device is virtio-mmio from the DSDT: no PCI to probe.
    kernel_args.push("pci=off".into());
    kernel_args.extend(spec.extra_kernel_args.iter().cloned());
    let paths = spec.paths();
    let mut a = vec![
        "--kernel".into(),
        spec.kernel.display().to_string(),
        "--initramfs".into(),
        spec.initramfs.display().to_string(),
        "--cmdline".into(),
        kernel_args.join(" "),
        "--cpus".into(),
        spec.vcpus.to_string(),
        "--memory".into(),
        spec.memory_mib.to_string(),
        "--disk".into(),
        format!("{},serial=boxyard-root,ro", spec.root_image.display()),
    ];
    if let Some(d) = &spec.writable_disk {
        a.extend(["--disk".into(), format!("{},serial=boxyard-rw", d.display())]);
    }
    a.extend([
        "--agent-socket".into(),
        spec.agent_socket().display().to_string(),
        "--console-log".into(),
        spec.console_log().display().to_string(),
        "--control-socket".into(),
        paths.vmm_control_socket().display().to_string(),
        "--pid-file".into(),
        paths.vmm_pid().display().to_string(),
    ]);
    match jail_id {
        Some(id) => a.extend(["--jail-uid".into(), id.to_string(), "--jail-gid".into(), id.to_string()]),
        None => a.push("--no-jail".into()),
    }
    a
}

#[async_trait::async_trait]
impl VmBackend for KvmBackend {
    fn name(&self) -> String {
        "kvm".into()
    }

    async fn create(&self, spec: VmSpec) -> Result<Box<dyn Vm>, VmError> {
        spec.validate()?;
        spec.validate_boot_files()?;
        if spec.vcpus > 32 {
            return Err(VmError::InvalidSpec(format!("the kvm backend boots at most 32 vCPUs, not {}", spec.vcpus)));
        }
        Ok(Box::new(KvmVm { backend: self.clone(), spec, process: None, id: None, cgroup: None }))
    }

    async fn adopt(&self, spec: VmSpec) -> Result<Option<Box<dyn Vm>>, VmError> {
        let Some(pid) = read_pid_file(&spec.paths().vmm_pid()) else { return Ok(None) };
        let marker = spec.run_dir.display().to_string();
        let Some(process) = VmProcess::adopt(pid, &marker) else { return Ok(None) };
        // The VM keeps its id and cgroup: taken back so no other VM gets them, released when it ends.
        let id = self.jail.as_ref().and_then(|pool| pool.reclaim(&spec.run_dir));
        let cgroup = self.cgroups.as_ref().map(|root| root.vm(&spec.id)).filter(|c| c.path().is_dir());
        Ok(Some(Box::new(KvmVm { backend: self.clone(), spec, process: Some(process), id, cgroup })))
    }
}

/// One `boxyard-vmm` VM.
pub struct KvmVm {
    backend: KvmBackend,
    spec: VmSpec,
    process: Option<VmProcess>,
    /// The uid/gid its VMM runs as, while it runs.
    id: Option<u32>,
    /// Its cgroup, while it exists.
    cgroup: Option<VmCgroup>,
}

impl KvmVm {
    /// Removes what a VMM leaves once it has ended: its runtime files, its id and its cgroup.
    fn cleanup(&mut self) {
        let p = self.spec.paths();
        for f in [p.agent_socket(), p.vmm_control_socket(), p.vmm_pid(), self.spec.run_dir.join(ids::ID_FILE)] {
            let _ = std::fs::remove_file(f);
        }
        if let (Some(pool), Some(id)) = (&self.backend.jail, self.id.take()) {
            pool.release(id);
        }
        if let Some(cg) = self.cgroup.take() {
            cg.remove();
        }
    }

    async fn control(&mut self, op: &str) -> Result<serde_json::Value, VmError> {
        if self.process.is_none() || self.poll_exit().is_some() {
            return Err(VmError::NotRunning);
        }
        vmm_control::request(&self.spec.paths().vmm_control_socket(), op, REQUEST_TIMEOUT).await
    }

    fn status_now(&mut self) -> VmStatus {
        let (status, just_ended) = slot_status(&mut self.process);
        // `wait` may have seen the end first (then `just_ended` is false): the id and cgroup still go.
        let holds = self.id.is_some() || self.cgroup.is_some();
        if just_ended || (holds && matches!(status, VmStatus::Stopped { .. })) {
            self.cleanup();
        }
        status
    }

    fn poll_exit(&mut self) -> Option<String> {
        match self.status_now() {
            VmStatus::Stopped { detail } => Some(detail),
            _ => None,
        }
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.spec.paths().vmm_log()).unwrap_or_default();
        let tail: Vec<&str> = s.lines().rev().take(5).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("; ")
    }
}

#[async_trait::async_trait]
impl Vm for KvmVm {
    fn spec(&self) -> &VmSpec {
        &self.spec
    }

    async fn start(&mut self) -> Result<(), VmError> {
        if self.process.as_mut().is_some_and(|p| p.poll_exit().is_none()) {
            return Ok(());
        }
        self.cleanup();
        let log = std::fs::File::create(self.spec.paths().vmm_log())?;
        self.id = match &self.backend.jail {
            Some(pool) => Some(pool.allocate(&self.spec.run_dir)?),
            None => None,
        };
        let mut cmd = Command::new(&self.backend.binary);
        cmd.args(args(&self.spec, self.id)).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        let procs = match &self.backend.cgroups {
            Some(root) => {
                let cg = root.create(&self.spec.id, &Limits::for_vm(self.spec.vcpus, self.spec.memory_mib));
                let cg = match cg {
                    Ok(cg) => self.cgroup.insert(cg),
                    Err(e) => {
                        self.cleanup();
                        return Err(e.into());
                    }
                };
                Some(cg.procs_file()?)
            }
            None => None,
        };
        if let Some(procs) = &procs {
            let fd = procs.as_raw_fd();
            // SAFETY: the closure runs in the forked child before exec and only calls write(2) on a descriptor the
            // parent keeps open until spawn returns; writing "0" moves the writing process into the cgroup.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let spawned = VmProcess::spawn(cmd, &self.backend.binary);
        drop(procs);
        match spawned {
            Ok(p) => self.process = Some(p),
            Err(e) => {
                self.cleanup();
                return Err(e);
            }
        }
        // The VMM binds the agent socket while building the VM; wait for it so callers can connect at once.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.spec.agent_socket().exists() {
            if let Some(detail) = self.poll_exit() {
                let tail = self.log_tail();
                return Err(VmError::EarlyExit {
                    detail: if tail.is_empty() { detail } else { format!("{detail}: {tail}") },
                    log: self.spec.paths().vmm_log(),
                });
            }
            if tokio::time::Instant::now() > deadline {
                let _ = self.kill().await;
                return Err(VmError::Control("boxyard-vmm did not create its agent socket within 10 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    async fn stop(&mut self, grace: Duration) -> Result<VmStatus, VmError> {
        if self.process.is_none() || self.poll_exit().is_some() {
            return Ok(self.status().await);
        }
        // The control socket's stop presses the guest's power button; SIGTERM does too where the socket fails.
        if let Err(e) = self.control("stop").await {
            tracing::warn!(vm = %self.spec.id, "graceful stop through the control socket failed ({e}); sending SIGTERM");
            if let Some(p) = self.process.as_mut() {
                p.signal(Signal::SIGTERM);
            }
        }
        match self.wait(grace).await {
            s @ VmStatus::Stopped { .. } => Ok(s),
            _ => self.kill().await,
        }
    }

    async fn kill(&mut self) -> Result<VmStatus, VmError> {
        // The control socket's kill ends the VMM at once; SIGKILL makes sure, whatever state it is in.
        if self.control("kill").await.is_ok()
            && let Some(p) = self.process.as_mut()
        {
            p.wait(Duration::from_millis(500)).await;
        }
        if let Some(p) = self.process.as_mut() {
            p.kill().await?;
        }
        self.cleanup();
        Ok(self.status().await)
    }

    async fn wait(&mut self, timeout: Duration) -> VmStatus {
        if let Some(p) = self.process.as_mut() {
            p.wait(timeout).await;
        }
        self.status().await
    }

    async fn status(&mut self) -> VmStatus {
        self.status_now()
    }

    async fn pause(&mut self) -> Result<(), VmError> {
        self.control("pause").await.map(drop)
    }

    async fn resume(&mut self) -> Result<(), VmError> {
        self.control("resume").await.map(drop)
    }

    async fn metrics(&mut self) -> Result<Vec<(String, u64)>, VmError> {
        Ok(vmm_control::counters(&self.control("metrics").await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rw: Option<&str>) -> VmSpec {
        VmSpec {
            id: "b1".into(),
            kernel: "/k".into(),
            initramfs: "/i".into(),
            root_image: "/r.ext4".into(),
            writable_disk: rw.map(PathBuf::from),
            vcpus: 2,
            memory_mib: 512,
            run_dir: PathBuf::from("/run/b1"),
            extra_kernel_args: vec!["boxyard.debug".into()],
        }
    }

    fn after<'a>(a: &'a [String], flag: &str) -> Vec<&'a str> {
        a.windows(2).filter(|w| w[0] == flag).map(|w| w[1].as_str()).collect()
    }

    #[test]
    fn arguments_name_the_disks_by_serial_and_the_run_directory_files() {
        let a = args(&spec(Some("/w.ext4")), Some(1_900_000_007));
        assert_eq!(after(&a, "--disk"), vec!["/r.ext4,serial=boxyard-root,ro", "/w.ext4,serial=boxyard-rw"]);
        assert_eq!(after(&a, "--agent-socket"), vec!["/run/b1/agent.sock"]);
        assert_eq!(after(&a, "--console-log"), vec!["/run/b1/console.log"]);
        assert_eq!(after(&a, "--pid-file"), vec!["/run/b1/vmm.pid"], "the adopt marker is in the command line");
        assert_eq!(after(&a, "--control-socket"), vec!["/run/b1/ctl.sock"]);
        assert_eq!((after(&a, "--cpus"), after(&a, "--memory")), (vec!["2"], vec!["512"]));
        let cmdline = after(&a, "--cmdline")[0];
        assert!(cmdline.starts_with("console=ttyS0 quiet"), "{cmdline}");
        assert!(cmdline.ends_with("pci=off boxyard.debug"), "{cmdline}");
        assert_eq!((after(&a, "--jail-uid"), after(&a, "--jail-gid")), (vec!["1900000007"], vec!["1900000007"]));
        assert!(!a.contains(&"--no-jail".to_string()));
    }

    #[test]
    fn without_a_jail_id_the_vmm_is_told_no_jail() {
        let a = args(&spec(None), None);
        assert!(a.contains(&"--no-jail".to_string()) && after(&a, "--jail-uid").is_empty(), "{a:?}");
    }

    #[test]
    fn without_a_writable_disk_only_the_root_disk_is_given() {
        assert_eq!(after(&args(&spec(None), Some(5)), "--disk"), vec!["/r.ext4,serial=boxyard-root,ro"]);
    }
}
