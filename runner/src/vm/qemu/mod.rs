//! The QEMU backend: one `qemu-system-x86_64` process per VM.
//!
//! - Acceleration: `-accel kvm` only where the host has hardware virtualization ([`crate::hostcaps`]), `-accel tcg`
//!   otherwise.
//! - Control: QMP on `run_dir/qmp.sock`. Console: `run_dir/console.log`. Agent: the virtio-serial port
//!   `boxyard.agent`, exposed as the unix socket `run_dir/agent.sock` (QEMU listens; the runner connects and may
//!   reconnect any number of times).
//! - QEMU runs in its own session (setsid), so it outlives the runner process: a runner restart does not stop boxes.

pub mod cmdline;
mod qmp;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::process::{VmProcess, read_pid_file, slot_status};
use super::{Vm, VmBackend, VmError, VmSpec, VmStatus};
pub use cmdline::{Accel, Machine};

/// Creates QEMU VMs.
#[derive(Clone, Debug)]
pub struct QemuBackend {
    /// `qemu-system-x86_64`.
    pub binary: PathBuf,
    /// KVM or TCG.
    pub accel: Accel,
    /// The machine type.
    pub machine: Machine,
    /// Host TSC rate handed to TCG microvm guests (see [`crate::hostcaps::tsc_khz`]).
    pub tsc_khz: Option<u64>,
}

impl QemuBackend {
    /// KVM where hardware virtualization exists, TCG otherwise; the microvm machine.
    pub fn detect() -> Self {
        let accel = if crate::hostcaps::hardware_virtualization() { Accel::Kvm } else { Accel::Tcg };
        QemuBackend {
            binary: "qemu-system-x86_64".into(),
            accel,
            machine: Machine::Microvm,
            tsc_khz: if accel == Accel::Tcg { crate::hostcaps::tsc_khz() } else { None },
        }
    }
}

#[async_trait::async_trait]
impl VmBackend for QemuBackend {
    fn name(&self) -> String {
        match self.accel {
            Accel::Kvm => "qemu-kvm".into(),
            Accel::Tcg => "qemu-tcg".into(),
        }
    }

    async fn create(&self, spec: VmSpec) -> Result<Box<dyn Vm>, VmError> {
        spec.validate()?;
        spec.validate_boot_files()?;
        Ok(Box::new(QemuVm { backend: self.clone(), spec, process: None }))
    }

    async fn adopt(&self, spec: VmSpec) -> Result<Option<Box<dyn Vm>>, VmError> {
        let Some(pid) = read_pid_file(&spec.paths().qemu_pid()) else { return Ok(None) };
        let marker = spec.run_dir.display().to_string();
        Ok(VmProcess::adopt(pid, &marker)
            .map(|p| Box::new(QemuVm { backend: self.clone(), spec, process: Some(p) }) as Box<dyn Vm>))
    }
}

/// One QEMU VM.
pub struct QemuVm {
    backend: QemuBackend,
    spec: VmSpec,
    process: Option<VmProcess>,
}

impl QemuVm {
    fn runtime_files(&self) -> [PathBuf; 3] {
        [self.spec.agent_socket(), self.spec.paths().qmp_socket(), self.spec.paths().qemu_pid()]
    }

    fn cleanup(&self) {
        for f in self.runtime_files() {
            let _ = std::fs::remove_file(f);
        }
    }

    /// How the process ended, if it has; removes the runtime files the first time the end is seen.
    fn poll_exit(&mut self) -> Option<String> {
        match self.status_now() {
            VmStatus::Stopped { detail } => Some(detail),
            _ => None,
        }
    }

    async fn qmp_command(&mut self, command: &str) -> Result<(), VmError> {
        if self.process.is_none() || self.poll_exit().is_some() {
            return Err(VmError::NotRunning);
        }
        let mut qmp = qmp::Qmp::connect(&self.spec.paths().qmp_socket(), Duration::from_secs(2)).await?;
        tokio::time::timeout(Duration::from_secs(5), qmp.execute(command, None))
            .await
            .map_err(|_| VmError::Control(format!("QMP {command} did not answer within 5 s")))?
            .map(drop)
    }

    fn status_now(&mut self) -> VmStatus {
        let (status, just_ended) = slot_status(&mut self.process);
        if just_ended {
            self.cleanup();
        }
        status
    }

    fn qemu_log_tail(&self) -> String {
        let s = std::fs::read_to_string(self.spec.paths().qemu_log()).unwrap_or_default();
        let tail: Vec<&str> = s.lines().rev().take(5).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("; ")
    }
}

#[async_trait::async_trait]
impl Vm for QemuVm {
    fn spec(&self) -> &VmSpec {
        &self.spec
    }

    async fn start(&mut self) -> Result<(), VmError> {
        if self.process.as_mut().is_some_and(|p| p.poll_exit().is_none()) {
            return Ok(());
        }
        self.cleanup();
        let log = std::fs::File::create(self.spec.paths().qemu_log())?;
        let mut cmd = Command::new(&self.backend.binary);
        cmd.args(cmdline::args(&self.spec, self.backend.accel, self.backend.machine, self.backend.tsc_khz))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        self.process = Some(VmProcess::spawn(cmd, &self.backend.binary)?);
        // QEMU creates its sockets while starting; wait for the agent socket so callers can connect at once.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.spec.agent_socket().exists() {
            if let Some(detail) = self.poll_exit() {
                let tail = self.qemu_log_tail();
                return Err(VmError::EarlyExit {
                    detail: if tail.is_empty() { detail } else { format!("{detail}: {tail}") },
                    log: self.spec.paths().qemu_log(),
                });
            }
            if tokio::time::Instant::now() > deadline {
                let _ = self.kill().await;
                return Err(VmError::Control("QEMU did not create its agent socket within 10 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    async fn stop(&mut self, grace: Duration) -> Result<VmStatus, VmError> {
        if self.process.is_none() || self.poll_exit().is_some() {
            return Ok(self.status().await);
        }
        let qmp_path = self.spec.paths().qmp_socket();
        if let Ok(mut qmp) = qmp::Qmp::connect(&qmp_path, Duration::from_secs(2)).await {
            let _ = qmp.execute("system_powerdown", None).await;
        }
        match self.wait(grace).await {
            s @ VmStatus::Stopped { .. } => Ok(s),
            _ => self.kill().await,
        }
    }

    async fn kill(&mut self) -> Result<VmStatus, VmError> {
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
        self.qmp_command("stop").await
    }

    async fn resume(&mut self) -> Result<(), VmError> {
        self.qmp_command("cont").await
    }
}
