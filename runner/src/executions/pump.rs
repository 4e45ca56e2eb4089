//! The output pump of one execution: guest agent → execution log → fsync → acknowledgement to the guest.
//!
//! The guest keeps every output byte until the runner acknowledges it, and the runner acknowledges only what is
//! durable in the log, so a runner crash at any moment loses nothing: the next pump resumes from the log's end and
//! the guest still holds everything after it. Appends are idempotent by cursor, so overlap is never duplicated.
//!
//! The pump follows the box's current agent session (a `watch` of `Option<Agent>`): a cut stream is resumed with
//! backoff; when the session ends (the box stopped or its VM died) the execution is finished with an error result
//! that keeps every byte stored so far.

use std::sync::Arc;
use std::time::Duration;

use boxyard_proto::agent::ReleaseRequest;
use futures::FutureExt;
use tokio::sync::watch;
use tonic::Code;

use super::{ExecResult, Execution};
use crate::agent::{Agent, OutputEvent, OutputFollower};

/// Output appended before one fsync and acknowledgement (the guest's ring holds 4 MiB by default).
const BATCH_BYTES: usize = 1 << 20;
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

enum Step {
    /// Try again (the stream was cut, the agent did not answer). `progressed`: output was stored since the last
    /// attempt, so the backoff starts over.
    Retry { why: String, progressed: bool },
    /// The disk failed (full, I/O error): reported at `warn`, then tried again. The guest keeps everything not yet
    /// acknowledged, so once the disk works again the output after the failure arrives, exactly once.
    Storage { why: String, progressed: bool },
    /// The execution can never be followed again (the agent does not have it, or it no longer has the output the
    /// log needs): finish it with what is stored.
    Gone(String),
    /// The box is being destroyed.
    Destroyed,
}

fn retry(why: impl Into<String>) -> Step {
    Step::Retry { why: why.into(), progressed: false }
}

/// What one step read from the agent: chunks to store, and maybe the exit, a cut, or a fatal error.
#[derive(Default)]
struct Batch {
    chunks: Vec<(u8, u64, Vec<u8>)>,
    bytes: usize,
    exit: Option<boxyard_proto::agent::ExecResult>,
    cut: Option<String>,
    fatal: Option<String>,
}

impl Batch {
    fn take(&mut self, ev: Result<Option<OutputEvent>, tonic::Status>) {
        match ev {
            Ok(Some(OutputEvent::Data { stream, cursor, data })) => {
                self.bytes += data.len();
                let stream = if stream == boxyard_proto::agent::Stream::Stderr { 2 } else { 1 };
                self.chunks.push((stream, cursor, data));
            }
            Ok(Some(OutputEvent::Exit(r))) => self.exit = Some(r),
            Ok(None) => self.cut = Some("the output stream ended".to_string()),
            Err(s) if s.code() == Code::DataLoss => {
                self.fatal = Some(format!("the agent's output is inconsistent: {s}"))
            }
            Err(s) => self.cut = Some(format!("the output stream failed: {s}")),
        }
    }
}

/// Starts the pump of `exec` on the box's session; `timeout` bounds each call to the agent (the output stream
/// itself may be idle for as long as the process prints nothing).
pub fn spawn(
    exec: Arc<Execution>,
    session: watch::Receiver<Option<Agent>>,
    timeout: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(exec, session, timeout))
}

async fn run(exec: Arc<Execution>, mut session: watch::Receiver<Option<Agent>>, timeout: Duration) {
    let mut backoff = MIN_BACKOFF;
    let mut reissued = false;
    let mut storage_failing = false;
    loop {
        if exec.is_finished() {
            return;
        }
        let agent = session.borrow_and_update().clone();
        let Some(agent) = agent else {
            finish_lost(&exec, "the box stopped before the execution finished".into()).await;
            return;
        };
        match follow(&exec, agent, &mut session, &mut reissued, &mut storage_failing, timeout).await {
            Ok(()) | Err(Step::Destroyed) => return,
            Err(Step::Gone(why)) => {
                finish_lost(&exec, why).await;
                return;
            }
            Err(Step::Retry { why, progressed }) => {
                if progressed {
                    backoff = MIN_BACKOFF;
                }
                tracing::debug!(execution = exec.id(), "output pump: {why}; resuming in {backoff:?}");
            }
            Err(Step::Storage { why, progressed }) => {
                if progressed {
                    backoff = MIN_BACKOFF;
                }
                // A full or failing disk is never silent: every failed attempt is a warning, and counted in
                // boxyard_runner_storage_errors_total.
                tracing::warn!(
                    execution = exec.id(),
                    "output pump: {why}; the output stored so far is kept and the guest keeps the rest; retrying \
                     in {backoff:?}"
                );
                storage_failing = true;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            changed = session.changed() => if changed.is_err() { return },
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn finish_lost(exec: &Arc<Execution>, why: String) {
    let e = exec.clone();
    match tokio::task::spawn_blocking(move || e.finish_lost(&why)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(execution = exec.id(), "cannot store the result: {e}"),
        Err(e) => tracing::error!(execution = exec.id(), "cannot store the result: {e}"),
    }
}

/// Waits for `fut` unless the session changes first. Only reads from the agent are raced against the session:
/// storing output and the result always runs to completion.
async fn or_session_change<T>(
    fut: impl std::future::Future<Output = T>,
    session: &mut watch::Receiver<Option<Agent>>,
    progressed: bool,
) -> Result<T, Step> {
    tokio::select! {
        r = fut => Ok(r),
        c = session.changed() => Err(if c.is_err() {
            Step::Destroyed
        } else {
            Step::Retry { why: "the box's agent session changed".into(), progressed }
        }),
    }
}

/// Follows the execution from the log's end until its result is stored.
async fn follow(
    exec: &Arc<Execution>,
    mut agent: Agent,
    session: &mut watch::Receiver<Option<Agent>>,
    reissued: &mut bool,
    storage_failing: &mut bool,
    timeout: Duration,
) -> Result<(), Step> {
    let from = exec.log.position().end;
    let start = crate::agent::call(timeout, OutputFollower::start(&mut agent, exec.id(), from));
    let started = or_session_change(start, session, false).await?;
    let mut f = match started {
        Ok(f) => f,
        Err(s) if s.code() == Code::NotFound && from == 0 && !*reissued => {
            // The runner recorded the execution but stopped before the agent started it (the agent forgets an
            // execution only after its result is stored): start it now; the agent is idempotent by id.
            *reissued = true;
            return match crate::agent::call(timeout, agent.exec(exec.meta.agent_request())).await {
                Ok(_) => Err(retry("started the execution the agent did not have")),
                Err(s) => Err(Step::Gone(format!("the execution could not be started: {}", s.message()))),
            };
        }
        Err(s) if matches!(s.code(), Code::NotFound | Code::OutOfRange | Code::DataLoss) => {
            return Err(Step::Gone(format!(
                "the guest agent can no longer provide this execution's output from cursor {from} ({}); \
                 output up to there is kept",
                s.message()
            )));
        }
        Err(s) => return Err(retry(format!("cannot follow output: {s}"))),
    };
    let mut progressed = false;
    loop {
        let mut batch = Batch::default();
        batch.take(or_session_change(f.next(), session, progressed).await?);
        while batch.exit.is_none() && batch.cut.is_none() && batch.fatal.is_none() && batch.bytes < BATCH_BYTES {
            match f.next().now_or_never() {
                Some(ev) => batch.take(ev),
                None => break,
            }
        }
        let Batch { chunks, exit, cut, fatal, .. } = batch;
        if !chunks.is_empty() {
            let log = exec.log.clone();
            let stored = tokio::task::spawn_blocking(move || {
                for (stream, cursor, data) in &chunks {
                    log.append(*stream, *cursor, data)?;
                }
                log.sync()?;
                Ok::<_, crate::execlog::LogError>(log.position().end)
            })
            .await;
            match stored {
                Ok(Ok(end)) => {
                    if std::mem::take(storage_failing) {
                        tracing::warn!(execution = exec.id(), end, "output pump: storing works again");
                    }
                    progressed = true;
                    f.ack(end).await
                }
                Ok(Err(e)) => return Err(Step::Storage { why: format!("cannot store output: {e}"), progressed }),
                Err(e) => return Err(Step::Storage { why: format!("cannot store output: {e}"), progressed }),
            }
        }
        if let Some(r) = exit {
            let killed = exec.killed();
            let e = exec.clone();
            let stored = tokio::task::spawn_blocking(move || e.finish(ExecResult::from_agent(&r, killed))).await;
            match stored {
                Ok(Ok(())) => {
                    if std::mem::take(storage_failing) {
                        tracing::warn!(execution = exec.id(), "output pump: storing works again; the result is stored");
                    }
                }
                Ok(Err(e)) => return Err(Step::Storage { why: format!("cannot store the result: {e}"), progressed }),
                Err(e) => return Err(Step::Storage { why: format!("cannot store the result: {e}"), progressed }),
            }
            // The result is durable: the guest may forget the execution.
            let _ = crate::agent::call(timeout, agent.release(ReleaseRequest { exec_id: exec.id().into() })).await;
            return Ok(());
        }
        if let Some(why) = fatal {
            return Err(Step::Gone(why));
        }
        if let Some(why) = cut {
            return Err(Step::Retry { why, progressed });
        }
    }
}
