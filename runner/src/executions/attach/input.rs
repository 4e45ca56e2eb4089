//! The input side of one Attach (client → runner): stdin, resizes and signals.
//!
//! stdin is written in order by one task (a full pipe may hold a write); signals and resizes run beside it, so a
//! Ctrl-C is never stuck behind input the process does not read. Acknowledgements of stdin go out through the
//! execution's stdin watch (see [`super::output`]), never through this side.

use std::sync::Arc;

use boxyard_proto::runner as pb;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::Control;
use crate::error::RunnerError;
use crate::executions::Execution;

type WeakEvents = mpsc::WeakSender<Result<pb::AttachEvent, Status>>;

/// Ends an attach with an input error, unless the execution has finished meanwhile (a signal or resize racing the
/// exit is not an error worth cutting the rest of the output for).
async fn report(exec: &Execution, weak: &WeakEvents, e: RunnerError) {
    if exec.is_finished() {
        return;
    }
    if let Some(tx) = weak.upgrade() {
        let _ = tx.send(Err(e.into())).await;
    }
}

/// Forwards the client's messages after `start` until the client stops sending or an input fails.
pub async fn forward<C: Control>(
    ctl: Arc<C>,
    exec: Arc<Execution>,
    mut inbound: Streaming<pb::AttachRequest>,
    weak: WeakEvents,
) {
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<pb::StdinData>(4);
    let (c, x, w) = (ctl.clone(), exec.clone(), weak.clone());
    tokio::spawn(async move {
        while let Some(s) = stdin_rx.recv().await {
            let r = match c.agent_of(&x) {
                Ok(mut a) => x.write_stdin(&mut a, s.data, s.eof, s.offset).await.map(|_| ()),
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                report(&x, &w, e).await;
                return;
            }
        }
    });
    while let Ok(Some(msg)) = inbound.message().await {
        let r = match msg.msg {
            Some(pb::attach_request::Msg::Stdin(s)) => {
                if stdin_tx.send(s).await.is_err() {
                    return;
                }
                Ok(())
            }
            Some(pb::attach_request::Msg::Resize(t)) => ctl.resize(exec.id(), Some(t)).await,
            Some(pb::attach_request::Msg::Signal(sig)) => ctl.signal(exec.id(), &sig).await,
            Some(pb::attach_request::Msg::Start(_)) => {
                Err(RunnerError::InvalidArgument("`start` may only be the first Attach message".into()))
            }
            None => Ok(()),
        };
        if let Err(e) = r {
            report(&exec, &weak, e).await;
            return;
        }
    }
}
