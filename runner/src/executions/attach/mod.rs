//! Attach, both directions: one client following one execution.
//!
//! - [`output`] (runner → client): `attached`, the log from the client's cursor, live output, `stdin_offset`
//!   acknowledgements, and finally `exit`.
//! - [`input`] (client → runner): stdin (in order, with offsets), resizes and signals.
//!
//! [`open`] reads the first message (`start`), checks the cursor and starts both sides. The input side holds only
//! a weak sender of the response stream, so the stream ends when the output side is done.

pub mod input;
pub mod output;

use std::sync::Arc;
use std::time::Duration;

use boxyard_proto::runner as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::Execution;
use crate::agent::Agent;
use crate::error::Result;

pub use output::{READ_BYTES, check_cursor, send_output};

/// Output events buffered per attach (each at most [`READ_BYTES`] of data).
pub const ATTACH_DEPTH: usize = 8;
/// How long an Attach waits for the agent to say where stdin stands.
const STDIN_OFFSET_TIMEOUT: Duration = Duration::from_secs(5);

/// What an attach needs from the rest of the runner: the execution, its box's agent, and the checked signal and
/// resize calls.
#[async_trait::async_trait]
pub trait Control: Send + Sync + 'static {
    /// The execution with this id, or NOT_FOUND.
    fn execution(&self, id: &str) -> Result<Arc<Execution>>;
    /// The agent of the box the execution runs in (FAILED_PRECONDITION when it is not running).
    fn agent_of(&self, exec: &Execution) -> Result<Agent>;
    /// Sends a signal to the execution's process group.
    async fn signal(&self, id: &str, signal: &str) -> Result<()>;
    /// Resizes the execution's terminal.
    async fn resize(&self, id: &str, tty: Option<pb::Tty>) -> Result<()>;
}

/// The response stream of one Attach.
pub type AttachStream = ReceiverStream<std::result::Result<pb::AttachEvent, Status>>;

/// Starts an Attach on its client stream: reads `start`, checks it, and serves both directions.
pub async fn open<C: Control>(ctl: Arc<C>, mut inbound: Streaming<pb::AttachRequest>) -> Result<AttachStream, Status> {
    let first = inbound.message().await?.and_then(|m| m.msg);
    let Some(pb::attach_request::Msg::Start(start)) = first else {
        return Err(Status::invalid_argument("the first Attach message must be `start` (execution_id, from_cursor)"));
    };
    let exec = ctl.execution(&start.execution_id)?;
    check_cursor(&exec, start.from_cursor)?;
    let (tx, rx) = mpsc::channel(ATTACH_DEPTH);
    let weak = tx.downgrade();
    // Where stdin stands goes into `attached`, for a client that resends input after a cut. Known at once unless the
    // runner restarted since the last write; then the agent is asked (best effort: a box that is not running has no
    // agent to ask, and its stdin cannot be written anyway).
    if exec.meta.stdin
        && !exec.is_finished()
        && let Ok(mut a) = ctl.agent_of(&exec)
    {
        let _ = tokio::time::timeout(STDIN_OFFSET_TIMEOUT, exec.stdin_position(&mut a)).await;
    }
    tokio::spawn(send_output(exec.clone(), start.from_cursor, tx));
    tokio::spawn(input::forward(ctl, exec, inbound, weak));
    Ok(ReceiverStream::new(rx))
}
