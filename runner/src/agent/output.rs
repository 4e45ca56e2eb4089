//! Following one execution's output with a cursor that survives cut connections.

use boxyard_proto::agent::{ExecResult, OutputRequest, OutputStart, Stream as OutStream, output_event, output_request};
use tokio::sync::mpsc;
use tonic::Streaming;

use super::Agent;

/// One item of an execution's output.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputEvent {
    /// Bytes of one stream starting at `cursor`.
    Data {
        /// stdout or stderr.
        stream: OutStream,
        /// The cursor of the first byte.
        cursor: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The execution ended; sent after every byte.
    Exit(ExecResult),
}

/// An open Output call. The caller acknowledges what it has stored with [`ack`](Self::ack).
pub struct OutputFollower {
    inbound: Streaming<boxyard_proto::agent::OutputEvent>,
    acks: mpsc::Sender<OutputRequest>,
    /// The cursor after the last byte received.
    pub cursor: u64,
}

impl OutputFollower {
    /// Starts following `exec_id` from `from_cursor`.
    pub async fn start(agent: &mut Agent, exec_id: &str, from_cursor: u64) -> Result<Self, tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        tx.send(OutputRequest {
            msg: Some(output_request::Msg::Start(OutputStart { exec_id: exec_id.into(), from_cursor })),
        })
        .await
        .expect("the receiver is alive");
        let inbound = agent.output(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
        Ok(OutputFollower { inbound, acks: tx, cursor: from_cursor })
    }

    /// The next event; None when the stream ended without an exit event (the connection was cut).
    pub async fn next(&mut self) -> Result<Option<OutputEvent>, tonic::Status> {
        match self.inbound.message().await? {
            None => Ok(None),
            Some(ev) => match ev.event {
                Some(output_event::Event::Chunk(c)) => {
                    if c.cursor != self.cursor {
                        return Err(tonic::Status::data_loss(format!(
                            "output chunk at cursor {} while expecting {}",
                            c.cursor, self.cursor
                        )));
                    }
                    self.cursor += c.data.len() as u64;
                    Ok(Some(OutputEvent::Data {
                        stream: OutStream::try_from(c.stream).unwrap_or(OutStream::Stdout),
                        cursor: c.cursor,
                        data: c.data,
                    }))
                }
                Some(output_event::Event::Exit(r)) => Ok(Some(OutputEvent::Exit(r))),
                None => Err(tonic::Status::internal("empty output event from the agent")),
            },
        }
    }

    /// Tells the agent everything below `cursor` is stored; it may release it.
    pub async fn ack(&self, cursor: u64) {
        let _ = self.acks.send(OutputRequest { msg: Some(output_request::Msg::Ack(cursor)) }).await;
    }
}

/// Everything an execution printed, by stream, and its result.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    /// Everything on stdout.
    pub stdout: Vec<u8>,
    /// Everything on stderr.
    pub stderr: Vec<u8>,
    /// The exit, once received.
    pub result: Option<ExecResult>,
}

impl Collected {
    /// stdout as text (lossy).
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// stderr as text (lossy).
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Reads an execution's output from cursor 0 to its exit, acknowledging as it goes.
pub async fn collect(agent: &mut Agent, exec_id: &str) -> Result<Collected, tonic::Status> {
    let mut f = OutputFollower::start(agent, exec_id, 0).await?;
    let mut out = Collected::default();
    loop {
        match f.next().await? {
            Some(OutputEvent::Data { stream, data, .. }) => {
                match stream {
                    OutStream::Stderr => out.stderr.extend_from_slice(&data),
                    _ => out.stdout.extend_from_slice(&data),
                }
                f.ack(f.cursor).await;
            }
            Some(OutputEvent::Exit(r)) => {
                out.result = Some(r);
                return Ok(out);
            }
            None => {
                return Err(tonic::Status::unavailable("the output stream ended before the execution's exit"));
            }
        }
    }
}
