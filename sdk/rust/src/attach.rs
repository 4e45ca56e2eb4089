//! Attaching to an execution's output over the WebSocket, resuming from the last cursor whenever the connection
//! drops, so that the caller sees every byte exactly once.
//!
//! The server tags every output frame with the cursor of its first byte. The attach keeps the cursor after the last
//! byte it handed out; after a cut (network, gateway restart, runner restart) it reconnects with that cursor, with
//! exponential backoff, and gives up with [`Error::AttachGaveUp`] after `max_retries` consecutive failures.
//! Requests that cannot succeed by retrying (unknown box or execution, a bad cursor, a revoked key) end the attach
//! at once with the API's error.
//!
//! Input is resumed too. The server says where the process's stdin stands when the attach opens (a response header)
//! and after every write (`stdin_offset` messages). The attach keeps the input the server has not acknowledged yet;
//! after a cut it declares the offset of that input and sends it again, and the runner skips what the process
//! already got. So stdin bytes are delivered exactly once, as long as this attach is the only one writing to it.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use boxyard_api::attach::OutputStream;
use boxyard_api::attach::{ClientMessage, OutputFrame, STDIN_OFFSET_HEADER, ServerMessage};

use crate::error::{Error, Result};
use crate::types::{ExitResult, TtySize, codes};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One connection: output is read here; everything sent goes through a writer task, so that input can be queued
/// while output is read (in a `select!`) without a send ever being left half done.
struct Conn {
    stream: futures::stream::SplitStream<Ws>,
    /// Each item is sent as a unit (an offset declaration and its input frame go together).
    tx: tokio::sync::mpsc::Sender<Vec<Message>>,
    /// Aborted when the connection is given up after a cut (after the exit it closes the socket by itself).
    writer: tokio::task::JoinHandle<()>,
}

/// Messages queued per connection before a sender waits.
const WRITE_QUEUE: usize = 8;

impl Conn {
    fn new(ws: Ws) -> Self {
        let (mut sink, stream) = ws.split();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Message>>(WRITE_QUEUE);
        let writer = tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                for m in batch {
                    if sink.send(m).await.is_err() {
                        // The reader sees the connection end and reconnects.
                        return;
                    }
                }
            }
            let _ = sink.close().await;
        });
        Conn { stream, tx, writer }
    }
}

/// One thing an attach yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Output bytes starting at `cursor`.
    Output {
        /// Where the bytes came from.
        stream: OutputStream,
        /// The cursor of the first byte.
        cursor: u64,
        /// The bytes.
        data: bytes::Bytes,
    },
    /// Output in `[from, to)` was dropped by the runner's retention before it could be read.
    Gap {
        /// The first cursor missing.
        from: u64,
        /// Where output resumes.
        to: u64,
    },
    /// The execution finished; every output byte was delivered before this.
    Exit(ExitResult),
}

/// Reconnection policy of an attach.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Consecutive failed reconnections before giving up.
    pub max_retries: u32,
    /// The wait before the first reconnection; it doubles with every failure.
    pub initial_backoff: Duration,
    /// The longest wait between reconnections.
    pub max_backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { max_retries: 10, initial_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(5) }
    }
}

/// A resuming attach. Read it with [`Attach::next`] (or turn it into a `Stream` with [`Attach::into_stream`]).
pub struct Attach {
    url: String,
    key: String,
    cursor: u64,
    retry: Retry,
    ws: Option<Conn>,
    failures: u32,
    /// Why the last connection failed or ended (for AttachGaveUp).
    last: String,
    done: bool,
    /// Reconnections made so far (for observability and tests).
    pub reconnects: u32,
    stdin: StdinBuffer,
    /// When the next reconnection may start: kept across calls, so that a `next` dropped during its backoff (a
    /// `select!` that took input) does not start the wait over.
    next_attempt: Option<tokio::time::Instant>,
}

/// Input kept while disconnected before `send_stdin` waits for the reconnection (bounds memory).
const MAX_INPUT_WHILE_CUT: usize = 8 << 20;

/// Input not yet acknowledged, kept for a resend after a cut, and how much of it the current connection has sent.
#[derive(Default)]
struct StdinBuffer {
    /// The stdin offset of `unacked[0]`; None while the server has not said where stdin stands (then input is
    /// appended without offsets and not resent).
    base: Option<u64>,
    unacked: Vec<u8>,
    /// Bytes at the start of `unacked` sent on the current connection.
    sent: usize,
    /// `close_stdin` was called: the EOF follows the input, after a cut as well.
    eof: bool,
    eof_sent: bool,
}

/// The next piece of input to send: its offset declaration and its frame.
struct Pending {
    declare: Message,
    frame: Message,
    /// Bytes of input in the frame (0 for the EOF).
    len: usize,
    eof: bool,
}

impl StdinBuffer {
    /// The server acknowledged everything below `offset`.
    ///
    /// An offset past everything this attach sent means another writer added input: later input goes after it
    /// (otherwise the runner would skip it as already received).
    fn ack(&mut self, offset: u64) {
        if let Some(base) = self.base
            && offset > base
        {
            let n = ((offset - base) as usize).min(self.unacked.len());
            self.unacked.drain(..n);
            self.sent = self.sent.saturating_sub(n);
            self.base = Some(if self.unacked.is_empty() { offset } else { base + n as u64 });
        }
    }

    /// A new connection: drop what the server says arrived; everything else is sent again.
    fn reconnected(&mut self, server_offset: Option<u64>) {
        match (self.base, server_offset) {
            (None, Some(n)) => self.base = Some(n),
            (Some(_), Some(n)) => self.ack(n),
            // The runner could not tell: resend everything unacknowledged (it skips what arrived).
            (_, None) => {}
        }
        self.sent = 0;
        self.eof_sent = false;
    }

    fn next_pending(&self) -> Option<Pending> {
        let base = self.base?;
        if self.sent < self.unacked.len() {
            let frame = &self.unacked[self.sent..(self.sent + INPUT_FRAME).min(self.unacked.len())];
            return Some(Pending {
                declare: declare(base + self.sent as u64),
                len: frame.len(),
                frame: Message::Binary(bytes::Bytes::copy_from_slice(frame)),
                eof: false,
            });
        }
        (self.eof && !self.eof_sent).then(|| Pending {
            declare: declare(base + self.unacked.len() as u64),
            frame: eof_message(),
            len: 0,
            eof: true,
        })
    }

    fn mark_sent(&mut self, p: &Pending) {
        self.sent += p.len;
        if p.eof {
            self.eof_sent = true;
        }
    }
}

/// Tells the server where the next stdin frame goes. Sent before every input frame, so that each frame's place is
/// explicit whatever was cut or cancelled before it.
fn declare(offset: u64) -> Message {
    text(ClientMessage::StdinOffset { offset })
}

/// The text frame of a client message.
fn text(m: ClientMessage) -> Message {
    Message::Text(m.encode().into())
}

/// Largest frame of input: a connection that breaks again has still moved input forward.
const INPUT_FRAME: usize = 64 * 1024;

fn eof_message() -> Message {
    text(ClientMessage::StdinEof)
}

impl Attach {
    pub(crate) fn new(url: String, key: String, from: u64, retry: Retry) -> Self {
        Attach {
            url,
            key,
            cursor: from,
            retry,
            ws: None,
            failures: 0,
            last: String::new(),
            done: false,
            reconnects: 0,
            stdin: StdinBuffer::default(),
            next_attempt: None,
        }
    }

    /// The cursor after the last byte handed out (where a new attach would resume).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Opens one WebSocket; also returns the stdin offset the server reported, if any.
    async fn connect(&mut self) -> std::result::Result<(Conn, Option<u64>), (bool, Error)> {
        let mut req = format!("{}?cursor={}", self.url, self.cursor)
            .into_client_request()
            .map_err(|e| (false, Error::Protocol(e.to_string())))?;
        let auth = format!("Bearer {}", self.key).parse().map_err(|_| (false, Error::Protocol("bad key".into())))?;
        req.headers_mut().insert("authorization", auth);
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, resp)) => {
                let stdin_offset =
                    resp.headers().get(STDIN_OFFSET_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
                Ok((Conn::new(ws), stdin_offset))
            }
            Err(tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let e = match resp.body().as_deref().map(Error::from_response_body) {
                    Some(Some(b)) => Error::Api {
                        status,
                        code: b.code,
                        message: b.message,
                        retry_after: b.retry_after,
                        request_id: b.request_id,
                    },
                    _ => Error::Api {
                        status,
                        code: "http_error".into(),
                        message: "the attach was refused".into(),
                        retry_after: None,
                        request_id: None,
                    },
                };
                // 5xx and 429 may pass; the rest will not.
                Err((status >= 500 || status == 429, e))
            }
            Err(e) => Err((true, Error::Transport { url: self.url.clone(), message: e.to_string() })),
        }
    }

    /// Connects now (with the same retries as [`Attach::next`]), so that input can be sent before any output
    /// arrives (an interactive command waiting for stdin). `next` reconnects through this after a cut.
    pub async fn open(&mut self) -> Result<()> {
        if self.done {
            return Err(self.ended());
        }
        loop {
            if self.ws.is_some() {
                return Ok(());
            }
            if self.failures > self.retry.max_retries {
                self.done = true;
                let last = std::mem::take(&mut self.last);
                return Err(Error::AttachGaveUp { attempts: self.failures, cursor: self.cursor, last });
            }
            if self.failures > 0 {
                let at = *self.next_attempt.get_or_insert_with(|| {
                    let shift = (self.failures - 1).min(16);
                    tokio::time::Instant::now()
                        + (self.retry.initial_backoff * (1u32 << shift)).min(self.retry.max_backoff)
                });
                tokio::time::sleep_until(at).await;
                self.next_attempt = None;
                self.reconnects += 1;
            }
            match self.connect().await {
                Ok((conn, stdin_offset)) => {
                    self.ws = Some(conn);
                    let before = self.stdin.base;
                    self.stdin.reconnected(stdin_offset);
                    if before.is_some() && self.stdin.base > before {
                        // Input got through since the last connection: that is progress, like output.
                        self.failures = 0;
                    }
                }
                Err((true, e)) => {
                    self.failures += 1;
                    self.last = e.to_string();
                }
                Err((false, e)) => {
                    self.done = true;
                    return Err(e);
                }
            }
        }
    }

    /// The next event: output in cursor order, gaps, then `Exit` and `None`. Cuts are resumed transparently.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        if self.done {
            return None;
        }
        loop {
            if self.ws.is_none()
                && let Err(e) = self.open().await
            {
                return Some(Err(e));
            }
            let conn = self.ws.as_mut().expect("connected");
            // Input this connection still owes is queued while output is read, a frame at a time. Queuing is
            // all-or-nothing once the queue has room, so a dropped `next` never leaves a frame half sent.
            let pending = self.stdin.next_pending();
            // Ok: a message (or the end); Err(queued): the input went into the writer's queue, or the writer had
            // ended (the connection broke).
            let received = tokio::select! {
                m = conn.stream.next() => Ok(m),
                permit = conn.tx.reserve(), if pending.is_some() => Err(match permit {
                    Ok(permit) => {
                        let p = pending.as_ref().expect("guarded");
                        permit.send(vec![p.declare.clone(), p.frame.clone()]);
                        true
                    }
                    Err(_) => false,
                }),
            };
            let received = match received {
                Ok(m) => m,
                Err(true) => {
                    self.stdin.mark_sent(&pending.expect("guarded"));
                    continue;
                }
                Err(false) => {
                    self.drop_connection("the connection broke while sending input".into());
                    continue;
                }
            };
            match received {
                Some(Ok(Message::Binary(b))) => {
                    let frame = match OutputFrame::decode(b) {
                        Ok(f) => f,
                        Err(e) => {
                            self.done = true;
                            return Some(Err(Error::Protocol(e.to_string())));
                        }
                    };
                    let (stream, mut data) = (frame.stream, frame.data);
                    let cursor = frame.cursor;
                    // Resuming never duplicates: drop anything before the cursor already handed out.
                    if cursor + (data.len() as u64) <= self.cursor {
                        continue;
                    }
                    let cursor = if cursor < self.cursor {
                        data = data.slice((self.cursor - cursor) as usize..);
                        self.cursor
                    } else if cursor > self.cursor {
                        self.done = true;
                        return Some(Err(Error::Protocol(format!(
                            "output skipped from cursor {} to {cursor} without a gap record",
                            self.cursor
                        ))));
                    } else {
                        cursor
                    };
                    self.cursor = cursor + data.len() as u64;
                    self.failures = 0;
                    return Some(Ok(Event::Output { stream, cursor, data }));
                }
                Some(Ok(Message::Text(t))) => match ServerMessage::decode(t.as_str()) {
                    Err(e) => return Some(Err(Error::Protocol(e.to_string()))),
                    Ok(ServerMessage::Gap { from, to }) => {
                        if to <= self.cursor {
                            continue;
                        }
                        self.cursor = to;
                        return Some(Ok(Event::Gap { from, to }));
                    }
                    Ok(ServerMessage::StdinOffset { offset }) => {
                        let before = self.stdin.base;
                        self.stdin.ack(offset);
                        if self.stdin.base > before {
                            // Input got through: progress, like output.
                            self.failures = 0;
                        }
                        continue;
                    }
                    Ok(ServerMessage::Exit(exit)) => {
                        self.done = true;
                        // Closed in the background: this future may be dropped (a `select!`) once it has the exit
                        // in hand, and the exit must not be lost with it.
                        // Dropping the connection lets its writer close it.
                        self.ws = None;
                        return Some(Ok(Event::Exit(exit)));
                    }
                    Ok(ServerMessage::Error { code, message }) => {
                        if code == codes::RUNNER_UNAVAILABLE || code == codes::RUNNER_CLOSED {
                            // The runner went away: resume from the cursor.
                            self.drop_connection(format!("{code}: {message}"));
                            continue;
                        }
                        if code == codes::INVALID_MESSAGE {
                            continue;
                        }
                        self.done = true;
                        return Some(Err(Error::Api { status: 0, code, message, retry_after: None, request_id: None }));
                    }
                    Ok(_) => continue,
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // Cut: resume from the cursor.
                    self.drop_connection("the connection closed before the exit message".into());
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The events as a `Stream`.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Event>> {
        futures::stream::unfold(self, |mut a| async move { a.next().await.map(|e| (e, a)) })
    }

    async fn send(&mut self, m: Message) -> Result<()> {
        match self.ws.as_mut() {
            Some(conn) => conn.tx.send(vec![m]).await.map_err(|_| Error::Transport {
                url: self.url.clone(),
                message: "the connection closed; the next read reconnects".into(),
            }),
            None => {
                Err(Error::Transport { url: self.url.clone(), message: "not connected (call next() first)".into() })
            }
        }
    }

    /// The error for a call on an attach that is over.
    fn ended(&self) -> Error {
        Error::Transport {
            url: self.url.clone(),
            message: "the attach has ended (the execution exited, or its retries ran out)".into(),
        }
    }

    /// Gives up the current connection after a cut; the next `open` (or `next`) reconnects.
    fn drop_connection(&mut self, why: String) {
        if let Some(conn) = self.ws.take() {
            conn.writer.abort();
        }
        self.failures += 1;
        self.last = why;
    }

    /// Sends bytes to the execution's stdin (it must have been created with `stdin: true`). Connects first if the
    /// attach has not connected yet. The bytes are kept until the server acknowledges them: after a cut they are
    /// sent again on the next connection, which [`Attach::next`] makes (this call does not wait for that), and the
    /// process gets each byte once.
    pub async fn send_stdin(&mut self, data: &[u8]) -> Result<()> {
        if self.stdin.eof {
            return Err(Error::Protocol("stdin was closed with close_stdin: no more input can be sent".into()));
        }
        if !self.input_ready().await? {
            // The server did not say where stdin stands: plain append, not resent.
            return self.send(Message::Binary(bytes::Bytes::copy_from_slice(data))).await;
        }
        self.stdin.unacked.extend_from_slice(data);
        self.flush_input().await;
        Ok(())
    }

    /// Closes the execution's stdin after everything sent before, also across a cut (like [`Attach::send_stdin`]).
    pub async fn close_stdin(&mut self) -> Result<()> {
        if !self.input_ready().await? {
            return self.send(eof_message()).await;
        }
        self.stdin.eof = true;
        self.flush_input().await;
        Ok(())
    }

    /// Connects if the attach never has; whether input goes with offsets (the server said where stdin stands).
    async fn input_ready(&mut self) -> Result<bool> {
        if self.done {
            return Err(self.ended());
        }
        // Never connected (where stdin stands is unknown), or cut with much input waiting: reconnect now.
        if self.stdin.base.is_none() || (self.ws.is_none() && self.stdin.unacked.len() >= MAX_INPUT_WHILE_CUT) {
            self.open().await?;
        }
        Ok(self.stdin.base.is_some())
    }

    /// Sends all input the current connection still owes; a failure only drops the connection (the next one
    /// sends it again).
    async fn flush_input(&mut self) {
        while let Some(conn) = self.ws.as_mut()
            && let Some(p) = self.stdin.next_pending()
        {
            match conn.tx.send(vec![p.declare.clone(), p.frame.clone()]).await {
                Ok(()) => self.stdin.mark_sent(&p),
                Err(_) => self.drop_connection("the connection broke while sending input".into()),
            }
        }
    }

    /// Resizes the execution's terminal (connects first if needed).
    pub async fn resize(&mut self, size: TtySize) -> Result<()> {
        self.send_command(text(ClientMessage::Resize { rows: size.rows, cols: size.cols })).await
    }

    /// Sends a command on a live connection: connects if needed, and once more if the connection turns out to
    /// have broken.
    async fn send_command(&mut self, m: Message) -> Result<()> {
        self.open().await?;
        if self.send(m.clone()).await.is_ok() {
            return Ok(());
        }
        self.drop_connection("the connection broke while sending a command".into());
        self.open().await?;
        self.send(m).await
    }

    /// Sends a signal ("INT", "SIGTERM", a number) to the execution's process group (connects first if needed).
    pub async fn signal(&mut self, signal: &str) -> Result<()> {
        self.send_command(text(ClientMessage::Signal { signal: signal.to_string() })).await
    }
}
