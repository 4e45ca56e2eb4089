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
const MAX_BACKOFF: Duration = Duration::from_secs(2);

enum Step {
    /// Try again (the stream was cut, the agent did not answer, the disk failed).
    Retry(String),
    /// The guest agent does not have the execution: it can never be followed again.
    Gone(String),
}

/// What one step read from the agent: chunks to store, and maybe the exit or a cut.
#[derive(Default)]
struct Batch {
    chunks: Vec<(u8, u64, Vec<u8>)>,
    bytes: usize,
    exit: Option<boxyard_proto::agent::ExecResult>,
    cut: Option<String>,
}

impl Batch {
    fn take(&mut self, ev: Result<Option<OutputEvent>, tonic::Status>) {
        match ev {
            Ok(Some(OutputEvent::Data { stream, cursor, data })) => {
                self.bytes += data.len();
                self.chunks.push((stream as u8, cursor, data));
            }
            Ok(Some(OutputEvent::Exit(r))) => self.exit = Some(r),
            Ok(None) => self.cut = Some("the output stream ended".to_string()),
            Err(s) => self.cut = Some(format!("the output stream failed: {s}")),
        }
    }
}

/// Starts the pump of `exec` on the box's session.
pub fn spawn(exec: Arc<Execution>, session: watch::Receiver<Option<Agent>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(exec, session))
}

async fn run(exec: Arc<Execution>, mut session: watch::Receiver<Option<Agent>>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        if exec.is_finished() {
            return;
        }
        let agent = session.borrow_and_update().clone();
        let Some(agent) = agent else {
            finish_lost(&exec, "the box stopped before the execution finished".into()).await;
            return;
        };
        let step = tokio::select! {
            r = follow(&exec, agent) => r,
            changed = session.changed() => {
                if changed.is_err() {
                    return; // The box is being destroyed.
                }
                Err(Step::Retry("the box's agent session changed".into()))
            }
        };
        match step {
            Ok(()) => return,
            Err(Step::Gone(why)) => {
                finish_lost(&exec, why).await;
                return;
            }
            Err(Step::Retry(why)) => {
                tracing::debug!(execution = exec.id(), "output pump: {why}; resuming in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    changed = session.changed() => if changed.is_err() { return },
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
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

/// Follows the execution from the log's end until its result is stored.
async fn follow(exec: &Arc<Execution>, mut agent: Agent) -> Result<(), Step> {
    let from = exec.log.position().end;
    let mut f = match OutputFollower::start(&mut agent, exec.id(), from).await {
        Ok(f) => f,
        Err(s) if s.code() == Code::NotFound => {
            return Err(Step::Gone(format!(
                "the guest agent no longer knows the execution (its VM restarted, or the process never started: {}); \
                 output up to cursor {from} is kept",
                s.message()
            )));
        }
        Err(s) => return Err(Step::Retry(format!("cannot follow output: {s}"))),
    };
    loop {
        let mut batch = Batch::default();
        batch.take(f.next().await);
        while batch.exit.is_none() && batch.cut.is_none() && batch.bytes < BATCH_BYTES {
            match f.next().now_or_never() {
                Some(ev) => batch.take(ev),
                None => break,
            }
        }
        let Batch { chunks: batch, exit, cut, .. } = batch;
        if !batch.is_empty() {
            let log = exec.log.clone();
            let stored = tokio::task::spawn_blocking(move || {
                for (stream, cursor, data) in &batch {
                    log.append(*stream, *cursor, data)?;
                }
                log.sync()?;
                Ok::<_, crate::execlog::LogError>(log.position().end)
            })
            .await;
            match stored {
                Ok(Ok(end)) => f.ack(end).await,
                Ok(Err(e)) => return Err(Step::Retry(format!("cannot store output: {e}"))),
                Err(e) => return Err(Step::Retry(format!("cannot store output: {e}"))),
            }
        }
        if let Some(r) = exit {
            let killed = exec.killed();
            let e = exec.clone();
            let stored = tokio::task::spawn_blocking(move || e.finish(ExecResult::from_agent(&r, killed))).await;
            match stored {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Step::Retry(format!("cannot store the result: {e}"))),
                Err(e) => return Err(Step::Retry(format!("cannot store the result: {e}"))),
            }
            // The result is durable: the guest may forget the execution.
            let _ = agent.release(ReleaseRequest { exec_id: exec.id().into() }).await;
            return Ok(());
        }
        if let Some(why) = cut {
            return Err(Step::Retry(why));
        }
    }
}
