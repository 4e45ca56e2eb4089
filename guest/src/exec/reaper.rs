//! Collects the exit status of every child process.
//!
//! As PID 1 the agent inherits every orphan in the box and must reap it, so it cannot let each spawner wait for its
//! own child: one loop calls `waitpid(-1)` on SIGCHLD and hands the status of the processes it spawned to whoever
//! registered them. Spawning and registering happen under the same lock the reaper takes, so a child that exits
//! immediately is never reaped before it is registered.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

/// The registry of children whose status somebody waits for.
#[derive(Clone, Default)]
pub struct Reaper {
    waiting: Arc<Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>>,
}

impl Reaper {
    /// Starts the reaping loop on the current tokio runtime.
    pub fn start() -> std::io::Result<Self> {
        let reaper = Reaper::default();
        let mut sigchld = signal(SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Spawns a child with `spawn` and registers it atomically; returns its pid and a receiver for its status.
    pub fn spawn<F>(&self, spawn: F) -> std::io::Result<(i32, oneshot::Receiver<ExitStatus>)>
    where
        F: FnOnce() -> std::io::Result<i32>,
    {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = spawn()?;
        let (tx, rx) = oneshot::channel();
        waiting.insert(pid, tx);
        Ok((pid, rx))
    }

    fn reap_all(&self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            if let Some(tx) = waiting.remove(&status.0.as_raw()) {
                let _ = tx.send(status.1);
            }
        }
    }
}
