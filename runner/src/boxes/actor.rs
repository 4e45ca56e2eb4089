//! The box actor: one tokio task per box owns its VM, its status, its record and its executions' output pumps,
//! and takes [`Command`]s from a bounded channel, one at a time, each answered on its own oneshot channel.
//!
//! Lifecycle commands (create, start, stop, destroy, recovery) are therefore serialized per box without a lock, and
//! a command whose caller went away still runs to its end (the VM is never left half stopped). What callers only
//! read is published by the actor through watches: the status ([`Status`]) and the agent session
//! (`Option<Agent>`), so reads (GetBox, inventory, metrics) and the calls that only need the agent (Exec, Signal,
//! file transfers) never wait behind a lifecycle command. See [`super::lifecycle`] for the commands' work,
//! [`super::recovery`] for re-adopting a VM after a runner restart, and [`super::monitor`] for noticing a VM that
//! exited by itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use boxyard_proto::runner as pb;
use tokio::sync::{mpsc, oneshot, watch};

use super::monitor::Monitor;
use super::record::{BoxRecord, Spec};
use crate::agent::Agent;
use crate::config::RunnerConfig;
use crate::error::{Result, RunnerError};
use crate::executions::registry::Registry;
use crate::executions::{Execution, pump};
use crate::paths::BoxPaths;
use crate::store;
use crate::vm::{Vm, VmBackend};

/// Commands queued per box before senders wait.
const MAILBOX: usize = 32;

/// What every box actor shares: the runner's configuration, its VM backend, its executions.
pub struct Shared {
    /// The runner's configuration.
    pub config: RunnerConfig,
    /// The VM backend.
    pub backend: Arc<dyn VmBackend>,
    /// Every execution of every box.
    pub registry: Arc<Registry>,
}

/// A box's state as the actor publishes it.
#[derive(Clone, Debug)]
pub struct Status {
    /// The lifecycle state.
    pub state: pb::BoxState,
    /// Why the box is in that state (failures, an unexpected VM exit).
    pub reason: String,
    /// When the VM last started (0: never).
    pub started_unix_ms: u64,
    /// The version of the last state change (see crate::version): orders this box's reports for the control plane.
    pub version: u64,
}

/// A request to a box actor; each carries the channel its answer goes to.
pub enum Command {
    /// Writes the new box's directories and record (the first command of a created box; on failure the actor ends).
    Create {
        /// The answer.
        reply: oneshot::Sender<Result<()>>,
    },
    /// Re-adopts the box's VM after a runner restart (the first command of a loaded box).
    Recover {
        /// Sent once recovery is done.
        reply: oneshot::Sender<Result<()>>,
    },
    /// Boots the box (a running box is answered as it is).
    Start {
        /// The answer.
        reply: oneshot::Sender<Result<pb::BoxInfo>>,
    },
    /// Ends the box's executions, then its VM.
    Stop {
        /// How long the VM gets to power off.
        timeout: Duration,
        /// The answer.
        reply: oneshot::Sender<Result<pb::BoxInfo>>,
    },
    /// Kills the VM and moves the box's directory aside; answers where it went (None: there was none). The actor
    /// ends after a successful destroy.
    Destroy {
        /// The answer.
        reply: oneshot::Sender<Result<Option<std::path::PathBuf>>>,
    },
    /// Follows a new execution's output (its pump is owned by the actor).
    Follow {
        /// The execution, already started in the guest.
        exec: Arc<Execution>,
    },
}

/// The caller's side of one box: its mailbox and what the actor publishes.
pub struct BoxHandle {
    /// The box id.
    pub id: String,
    /// The spec as created (it never changes).
    pub spec: Spec,
    /// When the box was created.
    pub created_unix_ms: u64,
    tx: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
    session: watch::Receiver<Option<Agent>>,
    /// Set while DestroyBox runs: other calls are refused as UNAVAILABLE.
    destroying: AtomicBool,
}

impl BoxHandle {
    /// The box's published status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// The box as the API shows it (without its executions).
    pub fn info(&self, backend: &str) -> pb::BoxInfo {
        let s = self.status.borrow();
        pb::BoxInfo {
            box_id: self.id.clone(),
            spec: Some(self.spec.to_proto()),
            state: s.state as i32,
            reason: s.reason.clone(),
            created_unix_ms: self.created_unix_ms,
            started_unix_ms: s.started_unix_ms,
            backend: backend.to_string(),
            executions: Vec::new(),
            state_version: s.version,
        }
    }

    /// The agent of the running VM, or FAILED_PRECONDITION saying the box must be started.
    pub fn agent(&self) -> Result<Agent> {
        self.session.borrow().clone().ok_or_else(|| {
            RunnerError::FailedPrecondition(format!(
                "box {:?} is {}: start it with StartBox first",
                self.id,
                boxyard_api::BoxState::from(self.status.borrow().state)
            ))
        })
    }

    /// Whether DestroyBox is running.
    pub fn is_destroying(&self) -> bool {
        self.destroying.load(Ordering::SeqCst)
    }

    /// Marks the box as being destroyed; false if it already was.
    pub fn begin_destroy(&self) -> bool {
        !self.destroying.swap(true, Ordering::SeqCst)
    }

    /// Clears the mark of a destroy that failed.
    pub fn end_destroy(&self) {
        self.destroying.store(false, Ordering::SeqCst);
    }

    /// Sends a command and waits for its answer.
    pub async fn request<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let gone = || RunnerError::Unavailable(format!("box {:?} is gone (destroyed meanwhile); retry", self.id));
        self.tx.send(make(tx)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Hands a started execution to the actor, which follows its output.
    pub async fn follow(&self, exec: Arc<Execution>) {
        if let Err(mpsc::error::SendError(Command::Follow { exec })) = self.tx.send(Command::Follow { exec }).await {
            // The box was destroyed meanwhile: nothing to follow.
            exec.mark_gone();
        }
    }
}

/// The task that owns one box.
pub(super) struct BoxActor {
    pub(super) shared: Arc<Shared>,
    pub(super) id: String,
    pub(super) paths: BoxPaths,
    pub(super) record: BoxRecord,
    pub(super) vm: Option<Box<dyn Vm>>,
    status: watch::Sender<Status>,
    pub(super) session: watch::Sender<Option<Agent>>,
    pumps: Vec<tokio::task::JoinHandle<()>>,
}

/// Whether the actor goes on after a command.
pub(super) enum Flow {
    Continue,
    End,
}

/// Starts the actor of a box in `state`; returns its handle.
pub fn spawn(shared: Arc<Shared>, record: BoxRecord, state: pb::BoxState, reason: String) -> Arc<BoxHandle> {
    let (tx, rx) = mpsc::channel(MAILBOX);
    let status = watch::channel(Status { state, reason, started_unix_ms: 0, version: crate::version::next(0) }).0;
    let session = watch::channel(None).0;
    let handle = Arc::new(BoxHandle {
        id: record.box_id.clone(),
        spec: record.spec.clone(),
        created_unix_ms: record.created_unix_ms,
        tx,
        status: status.subscribe(),
        session: session.subscribe(),
        destroying: AtomicBool::new(false),
    });
    let actor = BoxActor {
        paths: shared.config.paths().box_dir(&record.box_id),
        shared,
        id: record.box_id.clone(),
        record,
        vm: None,
        status,
        session,
        pumps: Vec::new(),
    };
    tokio::spawn(actor.run(rx));
    handle
}

impl BoxActor {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut monitor = Monitor::new();
        loop {
            let watching = self.vm.is_some() && self.state() == pb::BoxState::Running;
            tokio::select! {
                cmd = rx.recv() => {
                    let Some(cmd) = cmd else { break };
                    if let Flow::End = self.handle(cmd).await {
                        break;
                    }
                }
                _ = monitor.tick(), if watching => self.check_vm().await,
            }
        }
        for p in self.pumps.drain(..) {
            p.abort();
        }
    }

    async fn handle(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::Create { reply } => {
                let r = self.create().await;
                let failed = r.is_err();
                let _ = reply.send(r);
                if failed {
                    return Flow::End;
                }
            }
            Command::Recover { reply } => {
                self.recover().await;
                let _ = reply.send(Ok(()));
            }
            Command::Start { reply } => {
                let _ = reply.send(self.start().await);
            }
            Command::Stop { timeout, reply } => {
                let _ = reply.send(self.stop(timeout).await);
            }
            Command::Destroy { reply } => {
                let r = self.destroy().await;
                let done = r.is_ok();
                let _ = reply.send(r);
                if done {
                    return Flow::End;
                }
            }
            Command::Follow { exec } => self.track(exec),
        }
        Flow::Continue
    }

    pub(super) fn state(&self) -> pb::BoxState {
        self.status.borrow().state
    }

    pub(super) fn set_state(&self, state: pb::BoxState, reason: impl Into<String>) {
        let reason = reason.into();
        self.status.send_modify(|s| {
            s.state = state;
            s.reason = reason;
            s.version = crate::version::next(s.version);
        });
    }

    pub(super) fn info(&self) -> pb::BoxInfo {
        let s = self.status.borrow();
        pb::BoxInfo {
            box_id: self.id.clone(),
            spec: Some(self.record.spec.to_proto()),
            state: s.state as i32,
            reason: s.reason.clone(),
            created_unix_ms: self.record.created_unix_ms,
            started_unix_ms: s.started_unix_ms,
            backend: self.shared.backend.name(),
            executions: Vec::new(),
            state_version: s.version,
        }
    }

    /// Records (durably) whether the box should run.
    pub(super) async fn set_desired(&mut self, running: bool) -> Result<()> {
        if self.record.desired_running == running {
            return Ok(());
        }
        let mut r = self.record.clone();
        r.desired_running = running;
        let path = self.paths.record();
        let written = r.clone();
        let storage = self.shared.config.storage.clone();
        super::blocking(move || store::write_record(&storage, &path, &written)).await?;
        self.record = r;
        Ok(())
    }

    /// The VM runs with this agent: publish both.
    pub(super) fn mark_running(&mut self, agent: Agent) {
        self.status.send_modify(|s| {
            s.state = pb::BoxState::Running;
            s.reason.clear();
            s.started_unix_ms = store::now_ms();
            s.version = crate::version::next(s.version);
        });
        self.session.send_replace(Some(agent));
    }

    /// Starts pumps for the box's unfinished executions (they finish as lost at once if the box has no session).
    pub(super) fn resume_pumps(&mut self) {
        for exec in self.shared.registry.unfinished_of_box(&self.id) {
            self.track(exec);
        }
    }

    /// Starts the output pump of an execution (it finishes as lost at once if the box has no session).
    fn track(&mut self, exec: Arc<Execution>) {
        if exec.is_finished() {
            return;
        }
        self.pumps.retain(|h| !h.is_finished());
        let timeout = self.shared.config.agent_timeout;
        self.pumps.push(pump::spawn(exec, self.session.subscribe(), timeout));
    }

    /// Ends the pumps without finishing their executions (the box is being destroyed).
    pub(super) fn abort_pumps(&mut self) {
        for p in self.pumps.drain(..) {
            p.abort();
        }
    }

    /// One monitor check: a VM that exited by itself leaves the box stopped.
    async fn check_vm(&mut self) {
        let Some(vm) = self.vm.as_mut() else { return };
        if let Some(detail) = super::monitor::exited(vm.as_mut()).await {
            tracing::warn!(box_id = %self.id, "the VM exited unexpectedly: {detail}");
            self.vm = None;
            self.set_state(pb::BoxState::Stopped, format!("the VM exited unexpectedly ({detail})"));
            self.session.send_replace(None);
        }
    }
}
