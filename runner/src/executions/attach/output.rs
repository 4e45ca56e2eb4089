//! The output side of one Attach (runner → client): the log from the client's cursor, then live output, then the
//! result.
//!
//! Each attach has its own [`LogReader`](crate::execlog::LogReader) on a blocking thread and a bounded channel to the
//! client, so a slow client only slows itself: the pump, the process and other readers never wait for it. Memory
//! per attach is bounded by the channel depth times [`READ_BYTES`].

use std::sync::Arc;

use boxyard_proto::runner as pb;
use tokio::sync::mpsc;
use tonic::Status;

use super::super::Execution;
use crate::error::RunnerError;
use crate::execlog::Item;

/// Bytes read from the log per step.
pub const READ_BYTES: usize = 256 * 1024;

/// Where an attach's events go (to the client's response stream).
pub type EventSender = mpsc::Sender<Result<pb::AttachEvent, Status>>;

fn event(e: pb::attach_event::Event) -> Result<pb::AttachEvent, Status> {
    Ok(pb::AttachEvent { event: Some(e) })
}

/// Checks the cursor a client asks for.
pub fn check_cursor(exec: &Execution, from: u64) -> Result<(), RunnerError> {
    let end = exec.log.position().end;
    if from > end {
        return Err(RunnerError::OutOfRange(format!(
            "cursor {from} is beyond the output of execution {:?} stored so far ({end} bytes); \
             a client can only resume from a cursor it was sent",
            exec.id()
        )));
    }
    Ok(())
}

/// Sends `attached`, the output from `from`, live output, and finally `exit`. Returns when the execution's output
/// is complete, or the client went away.
///
/// Between output records it also sends `stdin_offset` whenever the process's stdin offset grew (from any writer),
/// taken from a watch: acknowledging input never waits on this stream, so a stdin writer is never held up by output
/// the client has not read yet.
pub async fn send_output(exec: Arc<Execution>, from: u64, tx: EventSender) {
    let mut stdin = exec.subscribe_stdin();
    // The value `attached` carries; later ones are sent when they differ (`changed()` in the wait below marks a
    // value seen without this loop having sent it, so the loop compares values instead).
    let mut stdin_sent = *stdin.borrow_and_update();
    if tx.send(event(pb::attach_event::Event::Attached(exec.to_proto()))).await.is_err() {
        return;
    }
    let mut pos = exec.log.subscribe();
    let mut res = exec.subscribe_result();
    let mut gone = exec.subscribe_gone();
    let mut reader = exec.log.reader(from);
    loop {
        if *gone.borrow_and_update() {
            break;
        }
        let stdin_now = *stdin.borrow_and_update();
        if let Some(n) = stdin_now
            && stdin_now != stdin_sent
        {
            if tx.send(event(pb::attach_event::Event::StdinOffset(n))).await.is_err() {
                return;
            }
            stdin_sent = stdin_now;
        }
        pos.borrow_and_update();
        let result = res.borrow_and_update().clone();
        let (back, items) = match tokio::task::spawn_blocking(move || {
            let items = reader.read(READ_BYTES);
            (reader, items)
        })
        .await
        {
            Ok(x) => x,
            Err(e) => {
                let _ = tx.send(Err(Status::internal(format!("log reader failed: {e}")))).await;
                return;
            }
        };
        reader = back;
        let items = match items {
            Ok(items) => items,
            Err(e) => {
                let _ = tx.send(Err(Status::internal(format!("cannot read the execution log: {e}")))).await;
                return;
            }
        };
        if items.is_empty() {
            if let Some(r) = result
                && reader.cursor >= r.output_end
            {
                let _ = tx.send(event(pb::attach_event::Event::Exit(r.to_proto()))).await;
                return;
            }
            tokio::select! {
                c = pos.changed() => if c.is_err() { break },
                c = res.changed() => if c.is_err() { break },
                _ = gone.changed() => {}
                _ = stdin.changed() => {}
                _ = tx.closed() => return,
            }
            continue;
        }
        for item in items {
            let e = match item {
                Item::Gap { from, to } => pb::attach_event::Event::Gap(pb::Gap { from, to }),
                Item::Data { stream, cursor, data } => {
                    pb::attach_event::Event::Output(pb::OutputRecord { stream: stream as i32, cursor, data })
                }
            };
            if tx.send(event(e)).await.is_err() {
                return;
            }
        }
    }
    let _ = tx.send(Err(Status::not_found(format!("execution {:?} was deleted while attached", exec.id())))).await;
}
