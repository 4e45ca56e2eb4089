//! The work of the box actor's lifecycle commands: create (directories and record), start (boot), stop (end the
//! executions, then the VM) and destroy (kill, move the directory aside).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use boxyard_proto::agent as ag;
use boxyard_proto::runner as pb;

use super::actor::BoxActor;
use super::blocking;
use crate::agent::Agent;
use crate::error::{Result, RunnerError};
use crate::executions::Execution;
use crate::launch;
use crate::store;
use crate::vm::VmSpec;

/// How long the guest agent gets to sync its disks when a box stops, before the VM is powered off.
const SHUTDOWN_RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopping box's executions get after SIGTERM (at most; half the stop timeout when that is shorter).
const EXEC_TERM_GRACE: Duration = Duration::from_secs(5);
/// How long they get after SIGKILL for their last output to be stored.
const EXEC_KILL_WAIT: Duration = Duration::from_secs(2);

pub(super) fn io_internal(what: &str, path: &std::path::Path, e: std::io::Error) -> RunnerError {
    RunnerError::Internal(format!("cannot {what} {}: {e}", path.display()))
}

impl BoxActor {
    /// Writes a new box's directories and record.
    pub(super) async fn create(&mut self) -> Result<()> {
        let (paths, record, storage) = (self.paths.clone(), self.record.clone(), self.shared.config.storage.clone());
        blocking(move || {
            for dir in [paths.vm().dir().to_path_buf(), paths.executions()] {
                std::fs::create_dir_all(&dir).map_err(|err| io_internal("create", &dir, err))?;
            }
            store::write_record(&storage, &paths.record(), &record)
        })
        .await
    }

    /// The VM spec of this box on this runner.
    pub(super) fn vm_spec(&self) -> VmSpec {
        let spec = &self.record.spec;
        let config = &self.shared.config;
        let root = match (&spec.snapshot, &config.snapshots) {
            (Some(s), Some(store)) => store.path_of(&s.digest),
            _ => spec
                .root_image
                .clone()
                .map(PathBuf::from)
                .or_else(|| config.default_root_image.clone())
                .unwrap_or_default(),
        };
        VmSpec {
            id: self.id.clone(),
            kernel: config.guest.kernel.clone(),
            initramfs: config.guest.initramfs.clone(),
            root_image: root,
            writable_disk: self.shared.backend.boots_images().then(|| self.paths.disk()),
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            run_dir: self.paths.vm().dir().to_path_buf(),
            extra_kernel_args: config.kernel_args.clone(),
        }
    }

    /// Boots the box (its snapshot image, if any, is already local).
    pub(super) async fn start(&mut self) -> Result<pb::BoxInfo> {
        if self.vm.is_some() && self.state() == pb::BoxState::Running {
            return Ok(self.info());
        }
        self.set_state(pb::BoxState::Starting, "");
        self.set_desired(true).await?;
        let disk = self.paths.disk();
        if self.shared.backend.boots_images() && !disk.exists() {
            let size = self.record.spec.disk_mib << 20;
            if let Err(e) = crate::disk::create_ext4(&disk, size).await {
                self.set_state(pb::BoxState::Failed, e.to_string());
                return Err(RunnerError::Internal(format!("box {:?}: {e}", self.id)));
            }
        }
        let spec = self.vm_spec();
        match launch::launch(self.shared.backend.as_ref(), spec, self.shared.config.boot_timeout).await {
            Ok(l) => {
                tracing::info!(box_id = %self.id, boot_ms = l.boot_time.as_millis() as u64, "box running");
                self.vm = Some(l.vm);
                self.mark_running(l.agent);
                Ok(self.info())
            }
            Err(e) => {
                self.set_state(pb::BoxState::Failed, format!("boot failed: {e}"));
                Err(RunnerError::Internal(format!("box {:?} failed to boot: {e}", self.id)))
            }
        }
    }

    /// Ends the box's executions, asks the agent to sync and power off, then stops the VM.
    pub(super) async fn stop(&mut self, timeout: Duration) -> Result<pb::BoxInfo> {
        self.set_desired(false).await?;
        if self.vm.is_some() {
            self.set_state(pb::BoxState::Stopping, "");
            let agent = self.session.borrow().clone();
            if let Some(mut a) = agent {
                self.end_executions(&a, timeout).await;
                // The agent syncs the box's disks and powers off; the VM stop below then only waits.
                let _ = tokio::time::timeout(SHUTDOWN_RPC_TIMEOUT, a.shutdown(ag::ShutdownRequest {})).await;
            }
            let r = match self.vm.as_mut() {
                Some(vm) => vm.stop(timeout).await,
                None => Ok(crate::vm::VmStatus::Stopped { detail: String::new() }),
            };
            self.vm = None;
            self.session.send_replace(None);
            if let Err(e) = r {
                self.set_state(pb::BoxState::Failed, format!("stopping the VM failed: {e}"));
                return Err(RunnerError::Internal(format!("box {:?}: stopping the VM failed: {e}", self.id)));
            }
        }
        self.set_state(pb::BoxState::Stopped, "");
        Ok(self.info())
    }

    /// Ends the box's running executions before its VM goes away, so that each keeps all its output and gets a
    /// real result (the signal that ended it) instead of being cut off: SIGTERM to each process group, up to half
    /// the stop timeout (at most [`EXEC_TERM_GRACE`]) for them to exit and their pumps to store the rest, then
    /// SIGKILL and up to [`EXEC_KILL_WAIT`] more. Whatever is still unfinished after that ends as lost when the
    /// session goes away, with the output stored so far.
    async fn end_executions(&self, agent: &Agent, timeout: Duration) {
        let box_id = self.id.as_str();
        let running: Vec<Arc<Execution>> = self.shared.registry.unfinished_of_box(box_id);
        let grace = (timeout / 2).min(EXEC_TERM_GRACE);
        // Each round is bounded as a whole, whatever the number of executions or an agent that does not answer.
        for (signal, wait) in [("TERM", grace), ("KILL", EXEC_KILL_WAIT)] {
            let left: Vec<&Arc<Execution>> = running.iter().filter(|e| !e.is_finished()).collect();
            if left.is_empty() {
                return;
            }
            tracing::info!(box_id, signal, executions = left.len(), "stopping the box: ending its executions");
            let round = async {
                futures::future::join_all(left.iter().map(|e| {
                    let mut agent = agent.clone();
                    let req = ag::SignalRequest { exec_id: e.id().into(), signal: signal.into() };
                    async move {
                        match agent.signal(req).await {
                            Ok(_) => {}
                            // It exited meanwhile.
                            Err(s) if s.code() == tonic::Code::FailedPrecondition => {}
                            // The wait runs out and the stop goes on.
                            Err(s) => tracing::warn!(box_id, execution = e.id(), "cannot signal: {}", s.message()),
                        }
                    }
                }))
                .await;
                futures::future::join_all(left.iter().map(|e| {
                    let mut r = e.subscribe_result();
                    async move {
                        let _ = r.wait_for(|r| r.is_some()).await;
                    }
                }))
                .await;
            };
            if tokio::time::timeout(wait, round).await.is_err() {
                tracing::warn!(box_id, signal, "executions still running after {wait:?}");
            }
        }
    }

    /// Kills the VM and moves the box's directory aside; returns where it went (None: there was none).
    pub(super) async fn destroy(&mut self) -> Result<Option<PathBuf>> {
        self.abort_pumps();
        if let Some(vm) = self.vm.as_mut()
            && let Err(e) = vm.kill().await
        {
            return Err(RunnerError::Internal(format!("box {:?}: cannot kill its VM: {e}", self.id)));
        }
        self.vm = None;
        self.set_state(pb::BoxState::Stopped, "destroyed");
        self.session.send_replace(None);
        let mut nonce = [0u8; 6];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let trash = self.shared.config.paths().trash(&self.id, &nonce);
        let dir = self.paths.dir().to_path_buf();
        blocking(move || match std::fs::rename(&dir, &trash) {
            Ok(()) => Ok(Some(trash)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_internal("move aside", &dir, e)),
        })
        .await
    }
}
