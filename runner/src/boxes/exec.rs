//! Executions as the facade starts and steers them: Exec (recorded durably before the guest runs anything, under a
//! guard on its id only), KillExecution, Signal and Resize. Every call to the guest agent has a deadline.

use std::collections::BTreeMap;
use std::sync::Arc;

use boxyard_proto::agent as ag;
use boxyard_proto::runner as pb;

use super::{BoxManager, blocking};
use crate::agent::{self, Agent};
use crate::cleanup::Cleanup;
use crate::error::{Result, RunnerError};
use crate::executions::{self, ExecMeta, Execution, attach};
use crate::store;

impl BoxManager {
    /// Starts a command in a box; an existing execution id with the same command returns that execution.
    pub async fn exec(&self, req: pb::ExecRequest) -> Result<pb::Execution> {
        let handle = self.handle(&req.box_id)?;
        if req.argv.is_empty() || req.argv[0].is_empty() {
            return Err(RunnerError::InvalidArgument("argv is empty: give the command to run".into()));
        }
        let id = if req.execution_id.is_empty() { executions::new_id() } else { req.execution_id.clone() };
        executions::validate_id(&id)?;
        let registry = self.shared.registry.clone();
        // Two Execs with the same id must not both create its directory; other ids go on meanwhile.
        let creating = registry.lock_id(&id).await;
        if let Some(existing) = registry.get(&id) {
            return Self::same_exec(&existing, &req);
        }
        if let Some(t) = &req.tty
            && (t.rows == 0 || t.cols == 0 || t.rows > u16::MAX as u32 || t.cols > u16::MAX as u32)
        {
            return Err(RunnerError::InvalidArgument(format!(
                "terminal size {}x{} is invalid: rows and cols must be between 1 and 65535",
                t.rows, t.cols
            )));
        }
        let mut agent = handle.agent()?;
        let mut env: BTreeMap<String, String> = handle.spec.env.clone();
        env.extend(req.env);
        let meta = ExecMeta {
            execution_id: id.clone(),
            box_id: handle.id.clone(),
            argv: req.argv,
            env,
            working_dir: req.working_dir,
            user: req.user,
            tty: req.tty.map(|t| (t.rows, t.cols)),
            stdin: req.stdin,
            timeout_ms: req.timeout_ms,
            kill_grace_ms: req.kill_grace_ms,
            created_unix_ms: store::now_ms(),
        };
        let paths = self.shared.config.paths().box_dir(&handle.id).execution(&id);
        let (log_config, storage) = (self.shared.config.log, self.shared.config.storage.clone());
        // Until the guest has started it, a failure forgets the execution again (a full disk, an agent that does
        // not answer).
        let mut undo = Cleanup::new();
        let (r, key, dir) = (registry.clone(), id.clone(), paths.dir().to_path_buf());
        undo.push("forget the execution", move || {
            r.remove(&key);
            // One small directory: deleted on the spot.
            let _ = std::fs::remove_dir_all(&dir);
        });
        let exec = {
            let (dir, meta) = (paths.dir().to_path_buf(), meta.clone());
            blocking(move || Execution::create(dir, meta, log_config, storage)).await?
        };
        registry.insert(exec.clone());
        drop(creating);
        let what = format!("starting {:?} in box {:?}", meta.argv[0], handle.id);
        agent::call(self.agent_timeout(), agent.exec(meta.agent_request()))
            .await
            .map_err(|s| RunnerError::from_agent(&what, s))?;
        undo.disarm();
        handle.follow(exec.clone()).await;
        Ok(exec.to_proto())
    }

    fn same_exec(existing: &Execution, req: &pb::ExecRequest) -> Result<pb::Execution> {
        if existing.meta.argv == req.argv && existing.meta.box_id == req.box_id {
            Ok(existing.to_proto())
        } else {
            Err(RunnerError::AlreadyExists(format!(
                "execution {:?} already exists with another command or in another box; pick another execution_id",
                existing.id()
            )))
        }
    }

    /// Kills an execution's process group (SIGKILL); its result says killed.
    pub async fn kill_execution(&self, id: &str) -> Result<pb::Execution> {
        let exec = self.execution(id)?;
        if exec.is_finished() {
            return Ok(exec.to_proto());
        }
        {
            let e = exec.clone();
            blocking(move || e.mark_killed()).await?;
        }
        let mut agent = self.agent_of(&exec)?;
        let req = ag::SignalRequest { exec_id: id.into(), signal: "KILL".into() };
        match agent::call(self.agent_timeout(), agent.signal(req)).await {
            Ok(_) => {}
            // It finished in the meantime: nothing to kill.
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {}
            Err(s) => return Err(RunnerError::from_agent("killing the execution", s)),
        }
        Ok(exec.to_proto())
    }

    /// Sends a signal (a name or a number) to an execution's process group.
    pub async fn signal(&self, id: &str, signal: &str) -> Result<()> {
        let exec = self.execution(id)?;
        if boxyard_proto::signal::parse(signal).is_err() {
            return Err(RunnerError::InvalidArgument(format!(
                "unknown signal {signal:?}: give a name such as TERM, SIGINT or a number"
            )));
        }
        if exec.is_finished() {
            return Err(RunnerError::FailedPrecondition(format!("execution {id:?} has finished")));
        }
        let mut agent = self.agent_of(&exec)?;
        let req = ag::SignalRequest { exec_id: id.into(), signal: signal.into() };
        agent::call(self.agent_timeout(), agent.signal(req))
            .await
            .map_err(|s| RunnerError::from_agent("sending the signal", s))?;
        Ok(())
    }

    /// Resizes an execution's terminal.
    pub async fn resize(&self, id: &str, tty: Option<pb::Tty>) -> Result<()> {
        let exec = self.execution(id)?;
        let Some(t) = tty.filter(|t| t.rows > 0 && t.cols > 0) else {
            return Err(RunnerError::InvalidArgument("resize needs a terminal size with rows and cols above 0".into()));
        };
        if exec.meta.tty.is_none() {
            return Err(RunnerError::FailedPrecondition(format!(
                "execution {id:?} has no terminal: only executions started with tty can be resized"
            )));
        }
        if exec.is_finished() {
            return Err(RunnerError::FailedPrecondition(format!("execution {id:?} has finished")));
        }
        let mut agent = self.agent_of(&exec)?;
        let req = ag::ResizeRequest { exec_id: id.into(), tty: Some(ag::Tty { rows: t.rows, cols: t.cols }) };
        agent::call(self.agent_timeout(), agent.resize(req))
            .await
            .map_err(|s| RunnerError::from_agent("resizing the terminal", s))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl attach::Control for BoxManager {
    fn execution(&self, id: &str) -> Result<Arc<Execution>> {
        BoxManager::execution(self, id)
    }

    fn agent_of(&self, exec: &Execution) -> Result<Agent> {
        BoxManager::agent_of(self, exec)
    }

    async fn signal(&self, id: &str, signal: &str) -> Result<()> {
        BoxManager::signal(self, id, signal).await
    }

    async fn resize(&self, id: &str, tty: Option<pb::Tty>) -> Result<()> {
        BoxManager::resize(self, id, tty).await
    }
}
