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

use crate::error::{Error, Result};
use crate::types::{ExitResult, TtySize};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Which output stream bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// One thing an attach yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Output bytes starting at `cursor`.
    Output { stream: OutputStream, cursor: u64, data: bytes::Bytes },
    /// Output in `[from, to)` was dropped by the runner's retention before it could be read.
    Gap { from: u64, to: u64 },
    /// The execution finished; every output byte was delivered before this.
    Exit(ExitResult),
}

/// Reconnection policy of an attach.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Consecutive failed reconnections before giving up.
    pub max_retries: u32,
    pub initial_backoff: Duration,
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
    ws: Option<Ws>,
    failures: u32,
    /// Why the last connection failed or ended (for AttachGaveUp).
    last: String,
    done: bool,
    /// Reconnections made so far (for observability and tests).
    pub reconnects: u32,
    stdin: StdinBuffer,
}

/// Input sent but not yet acknowledged, for a resend after a cut.
#[derive(Default)]
struct StdinBuffer {
    /// The stdin offset of `unacked[0]`; None while the server has not said where stdin stands (then input is
    /// appended without offsets and not resent).
    base: Option<u64>,
    unacked: Vec<u8>,
    /// `close_stdin` was called: the EOF is resent after a cut as well.
    eof: bool,
    /// A new connection still owes the resend; it carries the stdin offset the server reported.
    resend: Option<Option<u64>>,
}

impl StdinBuffer {
    /// The server acknowledged everything below `offset`.
    fn ack(&mut self, offset: u64) {
        if let Some(base) = self.base
            && offset > base
        {
            let n = ((offset - base) as usize).min(self.unacked.len());
            self.unacked.drain(..n);
            self.base = Some(base + n as u64);
        }
    }

    /// The stdin offset after everything sent so far.
    fn end(&self) -> Option<u64> {
        self.base.map(|b| b + self.unacked.len() as u64)
    }
}

/// Tells the server where the next stdin frame goes. Sent before every input frame, so that each frame's place is
/// explicit whatever was cut or cancelled before it.
fn declare(offset: u64) -> Message {
    Message::Text(serde_json::json!({"type": "stdin_offset", "offset": offset}).to_string().into())
}

/// Largest frame of resent input.
const RESEND_FRAME: usize = 64 * 1024;

fn eof_message() -> Message {
    Message::Text(r#"{"type":"stdin_eof"}"#.into())
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
        }
    }

    /// The cursor after the last byte handed out (where a new attach would resume).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Opens one WebSocket; also returns the stdin offset the server reported, if any.
    async fn connect(&mut self) -> std::result::Result<(Ws, Option<u64>), (bool, Error)> {
        let mut req = format!("{}?cursor={}", self.url, self.cursor)
            .into_client_request()
            .map_err(|e| (false, Error::Protocol(e.to_string())))?;
        let auth = format!("Bearer {}", self.key).parse().map_err(|_| (false, Error::Protocol("bad key".into())))?;
        req.headers_mut().insert("authorization", auth);
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, resp)) => {
                let stdin_offset = resp
                    .headers()
                    .get("x-boxyard-stdin-offset")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                Ok((ws, stdin_offset))
            }
            Err(tungstenite::Error::Http(resp)) => {
                let status = resp.status().as_u16();
                let body: serde_json::Value =
                    resp.body().as_ref().and_then(|b| serde_json::from_slice(b).ok()).unwrap_or_default();
                let e = Error::Api {
                    status,
                    code: body["code"].as_str().unwrap_or("http_error").to_string(),
                    message: body["message"].as_str().unwrap_or("the attach was refused").to_string(),
                    retry_after: body["retry_after"].as_u64(),
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
        loop {
            if let Some(server_offset) = self.stdin.resend {
                // Done in full before anything else is sent on this connection; if this future is dropped half
                // way (a `select!`), the next call starts it over, and the runner skips what arrived twice.
                match self.resume_stdin(server_offset).await {
                    Ok(()) => self.stdin.resend = None,
                    Err(e) => {
                        self.ws = None;
                        self.stdin.resend = None;
                        self.failures += 1;
                        self.last = e.to_string();
                    }
                }
            }
            if self.ws.is_some() {
                return Ok(());
            }
            if self.failures > self.retry.max_retries {
                self.done = true;
                let last = std::mem::take(&mut self.last);
                return Err(Error::AttachGaveUp { attempts: self.failures, cursor: self.cursor, last });
            }
            if self.failures > 0 {
                let shift = (self.failures - 1).min(16);
                tokio::time::sleep((self.retry.initial_backoff * (1u32 << shift)).min(self.retry.max_backoff)).await;
                self.reconnects += 1;
            }
            match self.connect().await {
                Ok((ws, stdin_offset)) => {
                    self.ws = Some(ws);
                    self.stdin.resend = Some(stdin_offset);
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

    /// On a new connection: learns where stdin stands and resends the input the process may not have received.
    async fn resume_stdin(&mut self, server_offset: Option<u64>) -> Result<()> {
        match (self.stdin.base, server_offset) {
            (None, Some(n)) => self.stdin.base = Some(n),
            (Some(base), Some(n)) => {
                if n > base {
                    // Input got through since the last connection: that is progress, like output.
                    self.failures = 0;
                }
                self.stdin.ack(n)
            }
            (_, None) => return Ok(()),
        }
        let (Some(base), Some(end)) = (self.stdin.base, self.stdin.end()) else { return Ok(()) };
        // In frames of bounded size, so that a connection that breaks again still moves input forward.
        let mut at = base;
        for i in (0..self.stdin.unacked.len()).step_by(RESEND_FRAME) {
            let frame = &self.stdin.unacked[i..(i + RESEND_FRAME).min(self.stdin.unacked.len())];
            let frame = bytes::Bytes::copy_from_slice(frame);
            let n = frame.len() as u64;
            self.send(declare(at)).await?;
            self.send(Message::Binary(frame)).await?;
            at += n;
        }
        if self.stdin.eof {
            self.send(declare(end)).await?;
            self.send(eof_message()).await?;
        }
        Ok(())
    }

    /// The next event: output in cursor order, gaps, then `Exit` and `None`. Cuts are resumed transparently.
    pub async fn next(&mut self) -> Option<Result<Event>> {
        if self.done {
            return None;
        }
        loop {
            if (self.ws.is_none() || self.stdin.resend.is_some())
                && let Err(e) = self.open().await
            {
                return Some(Err(e));
            }
            let ws = self.ws.as_mut().expect("connected");
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    if b.len() < 9 {
                        self.done = true;
                        return Some(Err(Error::Protocol("short output frame".into())));
                    }
                    let cursor = u64::from_be_bytes(b[1..9].try_into().expect("8 bytes"));
                    let stream = match b[0] {
                        1 => OutputStream::Stdout,
                        2 => OutputStream::Stderr,
                        s => {
                            self.done = true;
                            return Some(Err(Error::Protocol(format!("unknown stream id {s}"))));
                        }
                    };
                    let mut data = b.slice(9..);
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
                Some(Ok(Message::Text(t))) => {
                    let v: serde_json::Value = match serde_json::from_str(t.as_str()) {
                        Ok(v) => v,
                        Err(e) => return Some(Err(Error::Protocol(format!("bad text frame: {e}")))),
                    };
                    match v["type"].as_str() {
                        Some("gap") => {
                            let (from, to) = (v["from"].as_u64().unwrap_or(0), v["to"].as_u64().unwrap_or(0));
                            if to <= self.cursor {
                                continue;
                            }
                            self.cursor = to;
                            return Some(Ok(Event::Gap { from, to }));
                        }
                        Some("stdin_offset") => {
                            if let Some(n) = v["offset"].as_u64() {
                                self.stdin.ack(n);
                            }
                            continue;
                        }
                        Some("exit") => {
                            self.done = true;
                            let exit: ExitResult = match serde_json::from_value(v) {
                                Ok(x) => x,
                                Err(e) => return Some(Err(Error::Protocol(format!("bad exit message: {e}")))),
                            };
                            if let Some(mut ws) = self.ws.take() {
                                let _ = ws.close(None).await;
                            }
                            return Some(Ok(Event::Exit(exit)));
                        }
                        Some("error") => {
                            let code = v["code"].as_str().unwrap_or("").to_string();
                            let message = v["message"].as_str().unwrap_or("").to_string();
                            if code == "runner_unavailable" || code == "runner_closed" {
                                // The runner went away: resume from the cursor.
                                self.ws = None;
                                self.failures += 1;
                                self.last = format!("{code}: {message}");
                                continue;
                            }
                            if code == "invalid_message" {
                                continue;
                            }
                            self.done = true;
                            return Some(Err(Error::Api { status: 0, code, message, retry_after: None }));
                        }
                        _ => continue,
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    // Cut: resume from the cursor.
                    self.ws = None;
                    self.failures += 1;
                    self.last = "the connection closed before the exit message".into();
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
            Some(ws) => {
                ws.send(m).await.map_err(|e| Error::Transport { url: self.url.clone(), message: e.to_string() })
            }
            None => {
                Err(Error::Transport { url: self.url.clone(), message: "not connected (call next() first)".into() })
            }
        }
    }

    /// Sends bytes to the execution's stdin (it must have been created with `stdin: true`). Connects first if
    /// needed. If the connection drops, the bytes are kept and sent again on the next connection (by this call or
    /// by [`Attach::next`]); the process gets each byte once.
    pub async fn send_stdin(&mut self, data: &[u8]) -> Result<()> {
        self.open().await?;
        let Some(at) = self.stdin.end() else {
            // The server did not say where stdin stands: plain append, not resent.
            return self.send(Message::Binary(bytes::Bytes::copy_from_slice(data))).await;
        };
        self.stdin.unacked.extend_from_slice(data);
        self.send_or_drop(declare(at)).await;
        self.send_or_drop(Message::Binary(bytes::Bytes::copy_from_slice(data))).await;
        Ok(())
    }

    /// Closes the execution's stdin (after everything sent before), also across a cut.
    pub async fn close_stdin(&mut self) -> Result<()> {
        self.open().await?;
        let Some(at) = self.stdin.end() else { return self.send(eof_message()).await };
        self.stdin.eof = true;
        self.send_or_drop(declare(at)).await;
        self.send_or_drop(eof_message()).await;
        Ok(())
    }

    /// Sends input that is also kept for a resend: a failure only drops the connection (the next one resends).
    async fn send_or_drop(&mut self, m: Message) {
        if self.ws.is_some() && self.send(m).await.is_err() {
            self.ws = None;
            self.failures += 1;
            self.last = "the connection broke while sending input".into();
        }
    }

    /// Resizes the execution's terminal.
    pub async fn resize(&mut self, size: TtySize) -> Result<()> {
        let m = serde_json::json!({"type": "resize", "rows": size.rows, "cols": size.cols}).to_string();
        self.send(Message::Text(m.into())).await
    }

    /// Sends a signal ("INT", "SIGTERM", a number) to the execution's process group.
    pub async fn signal(&mut self, signal: &str) -> Result<()> {
        let m = serde_json::json!({"type": "signal", "signal": signal}).to_string();
        self.send(Message::Text(m.into())).await
    }
}
