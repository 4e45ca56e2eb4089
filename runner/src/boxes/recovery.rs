//! Recovery after a runner restart: the state directory is read back (boxes and their executions), and each box's
//! actor re-adopts the VM that outlived the previous runner process, reconnects to its guest agent and resumes
//! every unfinished execution's output pump from its log's end. Executions that finished meanwhile are still
//! complete, because the guest keeps unacknowledged output.

use std::time::{Duration, Instant};

use boxyard_proto::agent as ag;
use boxyard_proto::runner as pb;

use super::actor::{BoxActor, Shared};
use super::lifecycle::io_internal;
use super::record::BoxRecord;
use crate::agent;
use crate::error::Result;
use crate::executions::Execution;
use crate::paths::{BoxPaths, TRASH_PREFIX};
use crate::store;

/// How long a re-adopted VM's agent gets to answer after a runner restart.
const READOPT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a VM found running for a box that should not run gets to stop.
const FINISH_STOP_TIMEOUT: Duration = super::DEFAULT_STOP_TIMEOUT;

/// The boxes read from disk.
#[derive(Default)]
pub struct Loaded {
    /// Their records.
    pub records: Vec<BoxRecord>,
    /// Box directories whose record cannot be read (by directory name), with why: left as they are.
    pub unreadable: std::collections::HashMap<String, String>,
}

/// Reads every box and its executions from disk (blocking); executions go into the registry. Finishes interrupted
/// destroys and removes half-created directories; a box or execution whose record cannot be read is left as it is
/// (and logged), so a runner that does not understand it never damages it.
pub fn load_all(shared: &Shared) -> Result<Loaded> {
    let dir = shared.config.paths().boxes();
    let mut out = Loaded::default();
    for e in std::fs::read_dir(&dir).map_err(|e| io_internal("read", &dir, e))?.flatten() {
        let box_dir = e.path();
        if e.file_name().to_string_lossy().starts_with(TRASH_PREFIX) {
            // A destroy interrupted by a crash: finish it.
            let _ = std::fs::remove_dir_all(&box_dir);
            continue;
        }
        let paths = BoxPaths::new(&box_dir);
        let record = match store::read_record::<BoxRecord>(&paths.record()) {
            Ok(Some(r)) => r,
            Ok(None) => {
                // A creation that crashed before its record was written.
                tracing::warn!(dir = %box_dir.display(), "removing a box directory without box.json");
                let _ = std::fs::remove_dir_all(&box_dir);
                continue;
            }
            Err(e) => {
                tracing::error!("skipping a box, left as it is: {e}");
                out.unreadable.insert(e_name(&box_dir), e.to_string());
                continue;
            }
        };
        if let Ok(rd) = std::fs::read_dir(paths.executions()) {
            for x in rd.flatten() {
                match Execution::load(x.path(), shared.config.log, shared.config.storage.clone()) {
                    Ok(Some(exec)) => shared.registry.insert(exec),
                    Ok(None) => {
                        let _ = std::fs::remove_dir_all(x.path());
                    }
                    Err(e) => tracing::error!("skipping an execution, left as it is: {e}"),
                }
            }
        }
        out.records.push(record);
    }
    Ok(out)
}

fn e_name(dir: &std::path::Path) -> String {
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

impl BoxActor {
    /// Re-adopts the box's VM if it still runs; leaves the box running, stopped or failed.
    pub(super) async fn recover(&mut self) {
        let started = Instant::now();
        let desired = self.record.desired_running;
        tracing::info!(box_id = %self.id, "recovering");
        // Adopt even boxes that should not run: a StopBox interrupted by a crash may have left the VM running.
        match self.shared.backend.adopt(self.vm_spec()).await {
            Ok(Some(mut vm)) if !desired => {
                tracing::info!(box_id = %self.id, "finishing a stop that a runner restart interrupted");
                if let Err(e) = vm.stop(FINISH_STOP_TIMEOUT).await {
                    tracing::error!(box_id = %self.id, "cannot stop its VM: {e}");
                }
                self.set_state(pb::BoxState::Stopped, "");
            }
            Ok(Some(mut vm)) => {
                let socket = vm.spec().agent_socket();
                match agent::connect(&socket, READOPT_TIMEOUT).await {
                    Ok(mut a) => {
                        self.release_finished(&mut a).await;
                        tracing::info!(box_id = %self.id, elapsed_ms = started.elapsed().as_millis() as u64, "re-adopted a running box");
                        self.vm = Some(vm);
                        self.mark_running(a);
                    }
                    Err(e) => {
                        tracing::error!(box_id = %self.id, "re-adopted VM does not answer: {e}; killing it");
                        let _ = vm.kill().await;
                        self.set_state(
                            pb::BoxState::Failed,
                            format!("after a runner restart its VM's agent did not answer ({e}); the VM was killed"),
                        );
                    }
                }
            }
            Ok(None) if desired => {
                self.set_state(pb::BoxState::Stopped, "the VM ended while the runner was not running");
            }
            Ok(None) => self.set_state(pb::BoxState::Stopped, ""),
            Err(e) => {
                tracing::error!(box_id = %self.id, "cannot adopt its VM: {e}");
                self.set_state(pb::BoxState::Failed, format!("cannot re-adopt the VM: {e}"));
            }
        }
        // Unfinished executions follow the re-adopted agent, or (the box is not running) end as lost with the output
        // stored so far.
        self.resume_pumps();
        tracing::info!(box_id = %self.id, elapsed_ms = started.elapsed().as_millis() as u64, "recovered");
    }

    /// Lets the guest forget executions whose results were stored before the restart. Only a clean-up: bounded, so
    /// a slow guest cannot hold the runner's start-up (and with it every other box) hostage.
    async fn release_finished(&self, a: &mut agent::Agent) {
        let registry = &self.shared.registry;
        let cleanup = async {
            if let Ok(list) = a.list_execs(ag::ListExecsRequest {}).await {
                for info in list.into_inner().execs {
                    if registry.get(&info.exec_id).is_some_and(|e| e.is_finished()) {
                        let _ = a.release(ag::ReleaseRequest { exec_id: info.exec_id }).await;
                    }
                }
            }
        };
        if tokio::time::timeout(READOPT_TIMEOUT, cleanup).await.is_err() {
            tracing::warn!(box_id = %self.id, "the guest did not list its executions in time; skipped");
        }
    }
}
