//! Executions: one command run in a box, with its durable output log and its result.
//!
//! On disk, each execution owns `<box dir>/executions/<id>/`:
//!
//! ```text
//! exec.json    what was asked (argv, env, tty, ...): written before the guest is asked to start the process
//! log/         the execution output log (see crate::execlog)
//! killed       present once KillExecution was called (so the result says killed after a restart too)
//! result.json  the final result: written only once every output byte up to its output_end is durable in log/
//! ```
//!
//! - [`pump`]: moves output from the guest agent into the log, acknowledging to the guest only what is durable.
//! - [`attach`]: one client attached, both directions: the log from a cursor, live, then the result; stdin,
//!   resizes, signals.
//! - [`registry`]: every execution of the runner by id, and the per-id guard of their creation.
//! - [`gc`]: deleting finished executions after their time to live.

pub mod attach;
pub mod gc;
pub mod pump;
pub mod registry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};

use boxyard_proto::agent::{self as ag, exec_result::Outcome as AgentOutcome};
use boxyard_proto::runner as pb;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::agent::Agent;
use crate::error::{Result, RunnerError};
use crate::execlog::{ExecLog, LogConfig};
use crate::paths::ExecPaths;
use crate::storage::{Area, Op, Storage};
use crate::store::{self, Record};

/// What was asked (persisted as `exec.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExecMeta {
    /// The execution's id.
    pub execution_id: String,
    /// The box it runs in.
    pub box_id: String,
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// Its environment (the box's defaults, then the request's).
    pub env: BTreeMap<String, String>,
    /// Its working directory ("": the guest's default).
    pub working_dir: String,
    /// The user it runs as ("": root).
    pub user: String,
    /// Terminal size (rows, cols) for a tty execution.
    pub tty: Option<(u32, u32)>,
    /// Whether its stdin is open for writes.
    pub stdin: bool,
    /// Its time limit (0: none).
    pub timeout_ms: u64,
    /// How long it gets after SIGTERM at its time limit before SIGKILL.
    pub kill_grace_ms: u64,
    /// When it was asked for.
    pub created_unix_ms: u64,
}

impl Record for ExecMeta {
    const KIND: &'static str = "execution record (exec.json)";
    const VERSION: u32 = 1;
}

impl ExecMeta {
    /// The guest agent request that starts this execution (idempotent by id on the agent).
    pub fn agent_request(&self) -> ag::ExecRequest {
        ag::ExecRequest {
            exec_id: self.execution_id.clone(),
            argv: self.argv.clone(),
            env: self.env.clone().into_iter().collect(),
            working_dir: self.working_dir.clone(),
            user: self.user.clone(),
            tty: self.tty.map(|(rows, cols)| ag::Tty { rows, cols }),
            stdin: self.stdin,
            timeout_ms: self.timeout_ms,
            kill_grace_ms: self.kill_grace_ms,
        }
    }
}

/// The final result (persisted as `result.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ExecResult {
    /// The exit code, if the process exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<String>,
    /// Whether it hit its time limit.
    pub timed_out: bool,
    /// Whether KillExecution ended it.
    pub killed: bool,
    /// Why it could not run, or why its end is unknown ("" if neither).
    pub error: String,
    /// The cursor after its last output byte.
    pub output_end: u64,
    /// When it started.
    pub started_unix_ms: u64,
    /// When it finished.
    pub finished_unix_ms: u64,
}

impl Record for ExecResult {
    const KIND: &'static str = "execution result (result.json)";
    const VERSION: u32 = 1;
}

impl ExecResult {
    /// The result the agent reported.
    pub fn from_agent(r: &ag::ExecResult, killed: bool) -> Self {
        ExecResult {
            exit_code: match &r.outcome {
                Some(AgentOutcome::ExitCode(c)) => Some(*c),
                _ => None,
            },
            signal: match &r.outcome {
                Some(AgentOutcome::Signal(s)) => Some(s.clone()),
                _ => None,
            },
            timed_out: r.timed_out,
            killed,
            error: r.error.clone(),
            output_end: r.output_end,
            started_unix_ms: r.started_unix_ms,
            finished_unix_ms: r.finished_unix_ms,
        }
    }

    /// The result as the API shows it.
    pub fn to_proto(&self) -> pb::ExecutionResult {
        pb::ExecutionResult {
            outcome: match (&self.exit_code, &self.signal) {
                (Some(c), _) => Some(pb::execution_result::Outcome::ExitCode(*c)),
                (None, Some(s)) => Some(pb::execution_result::Outcome::Signal(s.clone())),
                _ => None,
            },
            timed_out: self.timed_out,
            killed: self.killed,
            error: self.error.clone(),
            output_end: self.output_end,
            started_unix_ms: self.started_unix_ms,
            finished_unix_ms: self.finished_unix_ms,
        }
    }
}

/// One execution held by the runner.
pub struct Execution {
    /// What was asked.
    pub meta: ExecMeta,
    /// Its directory.
    pub dir: PathBuf,
    /// Its output log.
    pub log: Arc<ExecLog>,
    storage: Arc<Storage>,
    result: watch::Sender<Option<ExecResult>>,
    /// Serializes [`finish`](Execution::finish): the first result wins, on disk and in memory alike.
    finish_lock: std::sync::Mutex<()>,
    /// Set once the execution is deleted (its box destroyed, or collected): attaches end.
    gone: watch::Sender<bool>,
    killed: AtomicBool,
    /// Serializes stdin writes (a full pipe can hold one for long).
    stdin_lock: tokio::sync::Mutex<()>,
    /// The stdin offset after the last write; None until known (after a runner restart it is asked of the agent).
    /// Readable without waiting for a write in progress, and watched by attaches to acknowledge input.
    stdin_progress: watch::Sender<Option<u64>>,
}

impl Execution {
    fn result_path(dir: &Path) -> PathBuf {
        ExecPaths::new(dir).result()
    }

    /// Creates a new execution's directory and records what was asked (durably, before the guest runs anything).
    pub fn create(dir: PathBuf, meta: ExecMeta, log_config: LogConfig, storage: Arc<Storage>) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| RunnerError::Internal(format!("cannot create {}: {e}", dir.display())))?;
        let paths = ExecPaths::new(&dir);
        store::write_record(&storage, &paths.meta(), &meta)?;
        let log = ExecLog::open_with(&paths.log(), log_config, storage.clone())?;
        Ok(Arc::new(Execution {
            meta,
            dir,
            log,
            storage,
            result: watch::channel(None).0,
            finish_lock: std::sync::Mutex::new(()),
            gone: watch::channel(false).0,
            killed: AtomicBool::new(false),
            stdin_lock: tokio::sync::Mutex::new(()),
            stdin_progress: watch::channel(Some(0)).0,
        }))
    }

    /// Loads an execution left by an earlier runner process (its log's torn tail is cut). None: the directory holds
    /// no record of what was asked (a creation that crashed half-way); the caller removes it.
    pub fn load(dir: PathBuf, log_config: LogConfig, storage: Arc<Storage>) -> Result<Option<Arc<Self>>> {
        let paths = ExecPaths::new(&dir);
        let Some(meta) = store::read_record::<ExecMeta>(&paths.meta())? else { return Ok(None) };
        let result = store::read_record::<ExecResult>(&Self::result_path(&dir))?;
        let log = ExecLog::open_with(&paths.log(), log_config, storage.clone())?;
        let killed = paths.killed().exists();
        Ok(Some(Arc::new(Execution {
            meta,
            dir,
            log,
            storage,
            result: watch::channel(result).0,
            finish_lock: std::sync::Mutex::new(()),
            gone: watch::channel(false).0,
            killed: AtomicBool::new(killed),
            stdin_lock: tokio::sync::Mutex::new(()),
            stdin_progress: watch::channel(None).0,
        })))
    }

    /// The execution's id.
    pub fn id(&self) -> &str {
        &self.meta.execution_id
    }

    /// Its result, once finished.
    pub fn result(&self) -> Option<ExecResult> {
        self.result.borrow().clone()
    }

    /// Follows the result (None until finished).
    pub fn subscribe_result(&self) -> watch::Receiver<Option<ExecResult>> {
        self.result.subscribe()
    }

    /// Whether its result is stored.
    pub fn is_finished(&self) -> bool {
        self.result.borrow().is_some()
    }

    /// Marks the execution deleted: attaches end with NOT_FOUND.
    pub fn mark_gone(&self) {
        self.gone.send_replace(true);
    }

    /// Follows whether the execution was deleted.
    pub fn subscribe_gone(&self) -> watch::Receiver<bool> {
        self.gone.subscribe()
    }

    /// Whether KillExecution was called.
    pub fn killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// Records (durably) that the execution is being killed.
    pub fn mark_killed(&self) -> Result<()> {
        if !self.killed.swap(true, Ordering::SeqCst) {
            let path = ExecPaths::new(&self.dir).killed();
            self.storage
                .run(Area::Records, Op::Create, || std::fs::write(&path, b""))
                .map_err(|e| RunnerError::Internal(format!("cannot record the kill in {}: {e}", self.dir.display())))?;
        }
        Ok(())
    }

    /// Stores the final result once every output byte before it is durable; later calls are ignored (the first
    /// result wins).
    pub fn finish(&self, mut result: ExecResult) -> Result<()> {
        let _guard = self.finish_lock.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_finished() {
            return Ok(());
        }
        self.log.sync()?;
        let end = self.log.position().end;
        if result.output_end != end {
            if result.output_end > end {
                tracing::error!(
                    execution = self.id(),
                    claimed = result.output_end,
                    stored = end,
                    "the result claims more output than the log holds; recording what is stored"
                );
            }
            result.output_end = end;
        }
        result.killed |= self.killed();
        store::write_record(&self.storage, &Self::result_path(&self.dir), &result)?;
        self.result.send_replace(Some(result));
        Ok(())
    }

    /// Ends an execution whose process can no longer be followed (its box stopped or its VM is gone), keeping all
    /// output stored so far.
    pub fn finish_lost(&self, why: &str) -> Result<()> {
        let now = store::now_ms();
        self.finish(ExecResult {
            error: why.to_string(),
            killed: self.killed(),
            output_end: self.log.position().end,
            started_unix_ms: self.meta.created_unix_ms,
            finished_unix_ms: now,
            ..Default::default()
        })
    }

    /// Writes stdin bytes at `offset` (None: after what was written so far). Returns the offset after the write.
    ///
    /// The one agent call without a deadline: a write waits, by design, until the process reads its stdin (a full
    /// pipe holds it); it ends when the attach that sent it ends.
    pub async fn write_stdin(&self, agent: &mut Agent, data: Vec<u8>, eof: bool, offset: Option<u64>) -> Result<u64> {
        if !self.meta.stdin {
            return Err(RunnerError::FailedPrecondition(format!(
                "execution {:?} was started without stdin: pass stdin=true to Exec to write to it",
                self.id()
            )));
        }
        let _writing = self.stdin_lock.lock().await;
        let current = *self.stdin_progress.borrow();
        let at = match (offset, current) {
            (Some(o), _) => o,
            (None, Some(c)) => c,
            (None, None) => Self::ask_stdin_offset(self.id(), agent).await?,
        };
        let r = agent
            .write_stdin(ag::WriteStdinRequest { exec_id: self.id().into(), offset: at, data, eof })
            .await
            .map_err(|s| RunnerError::from_agent("writing stdin", s))?
            .into_inner();
        self.stdin_progress.send_replace(Some(r.offset));
        Ok(r.offset)
    }

    /// How many bytes of stdin the process has received: the last known value at once, else (after a runner
    /// restart, before any write) asked of the agent.
    pub async fn stdin_position(&self, agent: &mut Agent) -> Result<u64> {
        if let Some(n) = *self.stdin_progress.borrow() {
            return Ok(n);
        }
        let _writing = self.stdin_lock.lock().await;
        if let Some(c) = *self.stdin_progress.borrow() {
            return Ok(c);
        }
        let at = Self::ask_stdin_offset(self.id(), agent).await?;
        self.stdin_progress.send_replace(Some(at));
        Ok(at)
    }

    /// Follows the stdin offset (None until known).
    pub fn subscribe_stdin(&self) -> watch::Receiver<Option<u64>> {
        self.stdin_progress.subscribe()
    }

    /// An empty write at 0 returns where the agent's stdin stands.
    async fn ask_stdin_offset(id: &str, agent: &mut Agent) -> Result<u64> {
        let req = ag::WriteStdinRequest { exec_id: id.into(), offset: 0, data: vec![], eof: false };
        let r = crate::agent::call(crate::config::DEFAULT_AGENT_TIMEOUT, agent.write_stdin(req))
            .await
            .map_err(|s| RunnerError::from_agent("writing stdin", s))?;
        Ok(r.into_inner().offset)
    }

    /// The execution as the API shows it.
    pub fn to_proto(&self) -> pb::Execution {
        let pos = self.log.position();
        let result = self.result();
        pb::Execution {
            execution_id: self.meta.execution_id.clone(),
            box_id: self.meta.box_id.clone(),
            argv: self.meta.argv.clone(),
            state: if result.is_some() {
                pb::ExecutionState::Finished as i32
            } else {
                pb::ExecutionState::Running as i32
            },
            tty: self.meta.tty.is_some(),
            stdin: self.meta.stdin,
            output_start: pos.start,
            output_end: pos.end,
            result: result.map(|r| r.to_proto()),
            created_unix_ms: self.meta.created_unix_ms,
            stdin_offset: if self.meta.stdin { *self.stdin_progress.borrow() } else { None },
        }
    }
}

/// Checks a caller-chosen execution id.
pub fn validate_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        || id.starts_with('.')
    {
        return Err(RunnerError::InvalidArgument(format!(
            "execution id {id:?} is invalid: use 1 to 64 characters of A-Z a-z 0-9 . _ - (not starting with .)"
        )));
    }
    Ok(())
}

/// A fresh random execution id.
pub fn new_id() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random source works");
    format!("ex-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}
