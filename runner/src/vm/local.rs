//! The `local` backend — **for tests and development only**: no VM and no isolation.
//!
//! A "VM" here is the guest agent binary (`boxyard-guest --listen-unix`) running as a host process, serving the same
//! agent protocol on the run directory's `agent.sock`. Commands run directly on the host as the runner's user, so
//! this backend must never run untrusted code. It exists so that the runner's (and the control plane's) logic can be
//! tested in seconds; real VMs are covered by the QEMU backend's tests.
//!
//! Like a QEMU VM, the agent process runs in its own session and outlives the runner; its pid is kept in
//! `run_dir/guest.pid` for re-adoption. Stopping sends SIGTERM (the agent kills its executions and exits).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Command;

use super::process::{VmProcess, read_pid_file, slot_status};
use super::{Vm, VmBackend, VmError, VmSpec, VmStatus};

/// How long a killed local agent gets to kill its executions before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// Runs the guest agent as a host process (test/dev only).
#[derive(Clone, Debug)]
pub struct LocalBackend {
    /// The `boxyard-guest` binary.
    pub guest_binary: PathBuf,
}

impl LocalBackend {
    /// `boxyard-guest` next to the running executable (both are built into the same target directory).
    pub fn beside_current_exe() -> Option<Self> {
        let exe = std::env::current_exe().ok()?;
        let dir = exe.parent()?;
        // Test binaries live one level deeper (target/debug/deps).
        [dir.join("boxyard-guest"), dir.parent()?.join("boxyard-guest")]
            .into_iter()
            .find(|p| p.is_file())
            .map(|guest_binary| LocalBackend { guest_binary })
    }
}

#[async_trait::async_trait]
impl VmBackend for LocalBackend {
    fn name(&self) -> String {
        "local".into()
    }

    fn boots_images(&self) -> bool {
        false
    }

    async fn create(&self, spec: VmSpec) -> Result<Box<dyn Vm>, VmError> {
        spec.validate()?;
        if !self.guest_binary.is_file() {
            return Err(VmError::MissingFile {
                what: "guest agent binary",
                path: self.guest_binary.clone(),
                hint: "build it with `cargo build -p boxyard-guest` or pass --guest-binary",
            });
        }
        Ok(Box::new(LocalVm { backend: self.clone(), spec, process: None }))
    }

    async fn adopt(&self, spec: VmSpec) -> Result<Option<Box<dyn Vm>>, VmError> {
        let Some(pid) = read_pid_file(&spec.paths().guest_pid()) else { return Ok(None) };
        let marker = spec.agent_socket().display().to_string();
        Ok(VmProcess::adopt(pid, &marker)
            .map(|p| Box::new(LocalVm { backend: self.clone(), spec, process: Some(p) }) as Box<dyn Vm>))
    }
}

/// One local agent process.
pub struct LocalVm {
    backend: LocalBackend,
    spec: VmSpec,
    process: Option<VmProcess>,
}

impl LocalVm {
    fn cleanup(&self) {
        let _ = std::fs::remove_file(self.spec.agent_socket());
        let _ = std::fs::remove_file(self.spec.paths().guest_pid());
    }

    /// How the process ended, if it has; removes the runtime files the first time the end is seen.
    fn poll_exit(&mut self) -> Option<String> {
        match self.status_now() {
            VmStatus::Stopped { detail } => Some(detail),
            _ => None,
        }
    }

    fn status_now(&mut self) -> VmStatus {
        let (status, just_ended) = slot_status(&mut self.process);
        if just_ended {
            self.cleanup();
        }
        status
    }
}

#[async_trait::async_trait]
impl Vm for LocalVm {
    fn spec(&self) -> &VmSpec {
        &self.spec
    }

    async fn start(&mut self) -> Result<(), VmError> {
        if self.process.as_mut().is_some_and(|p| p.poll_exit().is_none()) {
            return Ok(());
        }
        self.cleanup();
        let log_path = self.spec.paths().guest_log();
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(&self.backend.guest_binary);
        cmd.arg("--listen-unix")
            .arg(self.spec.agent_socket())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let process = VmProcess::spawn(cmd, &self.backend.guest_binary)?;
        if let Some(pid) = process.pid() {
            std::fs::write(self.spec.paths().guest_pid(), format!("{pid}\n"))?;
        }
        self.process = Some(process);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.spec.agent_socket().exists() {
            if let Some(detail) = self.poll_exit() {
                return Err(VmError::EarlyExit { detail, log: log_path });
            }
            if tokio::time::Instant::now() > deadline {
                let _ = self.kill().await;
                return Err(VmError::Control("the local agent did not create its socket within 10 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    async fn stop(&mut self, grace: Duration) -> Result<VmStatus, VmError> {
        if let Some(p) = self.process.as_mut() {
            p.signal(Signal::SIGTERM);
            if p.wait(grace).await.is_none() {
                p.kill().await?;
            }
        }
        Ok(self.status().await)
    }

    async fn kill(&mut self) -> Result<VmStatus, VmError> {
        // SIGTERM first: the agent kills its executions' process groups (they are not its session's) and exits.
        self.stop(KILL_GRACE).await
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
}
