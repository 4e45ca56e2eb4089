//! `GET /v1/boxes/{id}/executions/{eid}/attach?cursor=N`: the WebSocket attach, bridged to the runner's Attach
//! stream. The protocol is in docs/api.md ("Attach"):
//!
//! - server → client, binary: `[stream: u8 (1 stdout, 2 stderr)][cursor: u64 big-endian][data]`;
//! - server → client, text JSON: `{"type":"gap","from":..,"to":..}`, `{"type":"exit",...}` (after all output, then
//!   the server closes), `{"type":"error","code":..,"message":..}`;
//! - server → client, text JSON `{"type":"stdin_offset","offset":N}`: the process has received N bytes of stdin
//!   (after each stdin write; the value at open is the `x-boxyard-stdin-offset` response header);
//! - client → server, binary: stdin bytes; text JSON: `{"type":"stdin_offset","offset":N}` (the next binary frame
//!   starts at stdin byte N and later ones follow it, so a resend after a cut skips what the process already got),
//!   `{"type":"resize","rows":..,"cols":..}`, `{"type":"signal","signal":".."}`, `{"type":"stdin_eof"}`.
//!
//! The runner stream is opened before the upgrade, so a bad cursor or an unknown execution is an HTTP error, not a
//! WebSocket that closes at once.

use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use boxyard_api::attach::{ClientMessage, ExitResult, OutputStream, ServerMessage, encode_output};
use boxyard_api::error::codes;
use boxyard_proto::runner as pb;
use tokio::sync::mpsc;
use tonic::Streaming;
use uuid::Uuid;

use super::extract::{Query, id};
use super::model::AttachParams;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::lifecycle::{boxes, executions, streams};
use crate::state::AppState;

/// Ping interval on idle connections (keeps proxies from closing them; a dead peer is noticed).
const PING_EVERY: Duration = Duration::from_secs(20);
/// Attach activity is recorded on the box this often (postpones auto-stop).
const TOUCH_EVERY: Duration = Duration::from_secs(30);

/// The response header that carries where stdin stands when the attach opens.
pub use boxyard_api::attach::STDIN_OFFSET_HEADER;

/// Attach to an execution (WebSocket).
///
/// Streams output from `cursor` (default 0) to the end, then an `exit` message. Reconnect with the cursor after
/// the last byte received to resume with nothing lost or repeated.
#[utoipa::path(get, path = "/v1/boxes/{id}/executions/{eid}/attach", tag = "executions",
    params(("id" = Uuid, Path), ("eid" = Uuid, Path), AttachParams),
    responses((status = 101, description = "WebSocket upgrade; see docs/api.md for the frames"),
        (status = 400, body = ErrorBody, description = "invalid_cursor"), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn attach(
    State(st): State<AppState>,
    p: Principal,
    Path((bid, eid)): Path<(String, String)>,
    Query(q): Query<AttachParams>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let b = boxes::get(&st, p.org_id, id(&bid, "box")?).await?;
    let x = executions::get(&st, &b, id(&eid, "execution")?).await?;
    // Checked after the objects, so that another org's ids are a 404 whatever the request looks like.
    let ws = ws.map_err(|e| {
        ApiError::bad_request("websocket_required", format!("attach is a WebSocket endpoint: {}", e.body_text()))
    })?;
    let streams::OpenAttach { events, input: tx, stdin_offset } =
        streams::open_attach(&st, &b, &x, q.cursor.unwrap_or(0)).await?;
    let box_id = b.id;
    let mut resp = ws.on_upgrade(move |socket| async move {
        st.metrics.attaches.inc();
        let _ = crate::lifecycle::touch(&st, box_id).await;
        bridge(&st, box_id, socket, events, tx).await;
        let _ = crate::lifecycle::touch(&st, box_id).await;
        st.metrics.attaches.dec();
    });
    if let Some(n) = stdin_offset {
        resp.headers_mut().insert(STDIN_OFFSET_HEADER, n.into());
    }
    Ok(resp)
}

/// The text frame of a server message.
fn text(m: ServerMessage) -> Message {
    Message::Text(m.encode().into())
}

/// An `error` message.
fn error_message(code: &str, message: impl Into<String>) -> Message {
    text(ServerMessage::Error { code: code.into(), message: message.into() })
}

fn exit_message(r: &pb::ExecutionResult) -> Message {
    let (exit_code, signal) = match &r.outcome {
        Some(pb::execution_result::Outcome::ExitCode(c)) => (Some(*c), None),
        Some(pb::execution_result::Outcome::Signal(s)) => (None, Some(s.clone())),
        None => (None, None),
    };
    text(ServerMessage::Exit(ExitResult {
        exit_code,
        signal,
        timed_out: r.timed_out,
        killed: r.killed,
        error: if r.error.is_empty() { None } else { Some(r.error.clone()) },
        output_end: r.output_end,
    }))
}

/// Encodes an output record as a binary frame; None for a record of a stream the API does not know (a runner bug).
pub fn output_frame(o: &pb::OutputRecord) -> Option<Message> {
    let stream = OutputStream::from_id(u8::try_from(o.stream).ok()?)?;
    Some(Message::Binary(encode_output(stream, o.cursor, &o.data).into()))
}

async fn bridge(
    st: &AppState,
    box_id: Uuid,
    socket: WebSocket,
    mut events: Streaming<pb::AttachEvent>,
    tx: mpsc::Sender<pb::AttachRequest>,
) {
    use futures::{SinkExt, StreamExt};
    let (mut sink, stream) = socket.split();
    // The client's messages are read by their own task, so that input keeps flowing while output waits for the
    // client to read (a client that writes a lot before reading must not wedge both directions).
    let (notes_tx, mut notes) = mpsc::channel::<Message>(4);
    let mut reader = tokio::spawn(forward_input(stream, tx, notes_tx));
    let mut reading = true;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut touch = tokio::time::interval(TOUCH_EVERY);
    touch.tick().await;
    loop {
        let msg = tokio::select! {
            ev = events.message() => match ev {
                Ok(Some(pb::AttachEvent { event: Some(e) })) => match e {
                    pb::attach_event::Event::Output(o) => match output_frame(&o) {
                        Some(m) => m,
                        None => {
                            tracing::warn!(stream = o.stream, "the runner sent output of an unknown stream; dropped");
                            continue;
                        }
                    },
                    pb::attach_event::Event::Gap(g) => text(ServerMessage::Gap { from: g.from, to: g.to }),
                    pb::attach_event::Event::StdinOffset(n) => text(ServerMessage::StdinOffset { offset: n }),
                    pb::attach_event::Event::Exit(r) => {
                        let _ = sink.send(exit_message(&r)).await;
                        let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000, reason: "exited".into() }))).await;
                        break;
                    }
                    pb::attach_event::Event::Attached(_) => continue,
                },
                Ok(Some(_)) => continue,
                Ok(None) => {
                    let _ = sink.send(error_message(codes::RUNNER_CLOSED,
                        "the runner ended the stream without a result; reconnect with your last cursor")).await;
                    let _ = sink.send(Message::Close(Some(CloseFrame { code: 1011, reason: "runner closed".into() }))).await;
                    break;
                }
                Err(s) => {
                    // A broken runner connection (the runner restarting) surfaces as UNKNOWN from h2: the client
                    // should reconnect from its last cursor.
                    let e = match s.code() {
                        tonic::Code::Unknown | tonic::Code::Cancelled => ApiError::unavailable(
                            "runner_unavailable",
                            format!("the connection to the runner broke ({}); reconnect with your last cursor", s.message()),
                        ),
                        _ => ApiError::from(s),
                    };
                    let _ = sink.send(error_message(e.code(), e.body.message.clone())).await;
                    let _ = sink.send(Message::Close(Some(CloseFrame { code: 1011, reason: "runner error".into() }))).await;
                    break;
                }
            },
            // Answers about the client's own messages (e.g. one the server does not understand).
            Some(note) = notes.recv() => note,
            // The client closed the WebSocket (or it broke): detach. If instead the runner stopped taking input
            // (it ended the stream after an exit or an error), what it sent before is still passed on.
            ended = &mut reader, if reading => {
                if matches!(ended, Ok(InputEnded::Client) | Err(_)) {
                    break;
                }
                reading = false;
                continue;
            }
            _ = ping.tick() => Message::Ping(Default::default()),
            _ = touch.tick() => {
                let _ = crate::lifecycle::touch(st, box_id).await;
                continue;
            }
        };
        if sink.send(msg).await.is_err() {
            break;
        }
    }
    reader.abort();
}

/// Why [`forward_input`] returned.
enum InputEnded {
    /// The client closed the WebSocket or it broke.
    Client,
    /// The runner no longer takes input (its Attach stream is ending).
    Runner,
}

/// Reads the client's messages and forwards them to the runner: binary frames are stdin (at the declared offset,
/// if the client declared one), text frames are JSON commands.
async fn forward_input(
    mut stream: futures::stream::SplitStream<WebSocket>,
    tx: mpsc::Sender<pb::AttachRequest>,
    notes: mpsc::Sender<Message>,
) -> InputEnded {
    use futures::StreamExt;
    // Where the next binary stdin frame goes, once the client has declared it (None: append).
    let mut stdin_at: Option<u64> = None;
    while let Some(m) = stream.next().await {
        let req = match m {
            Err(_) | Ok(Message::Close(_)) => return InputEnded::Client,
            Ok(Message::Binary(data)) => {
                let offset = stdin_at;
                if let Some(at) = stdin_at.as_mut() {
                    *at += data.len() as u64;
                }
                pb::attach_request::Msg::Stdin(pb::StdinData { data: data.to_vec(), eof: false, offset })
            }
            Ok(Message::Text(t)) => match ClientMessage::decode(t.as_str()) {
                Ok(ClientMessage::Resize { rows, cols }) => pb::attach_request::Msg::Resize(pb::Tty { rows, cols }),
                Ok(ClientMessage::Signal { signal }) => pb::attach_request::Msg::Signal(signal),
                Ok(ClientMessage::StdinEof) => {
                    pb::attach_request::Msg::Stdin(pb::StdinData { data: vec![], eof: true, offset: stdin_at })
                }
                Ok(ClientMessage::StdinOffset { offset }) => {
                    stdin_at = Some(offset);
                    continue;
                }
                Err(e) => {
                    let note = error_message(codes::INVALID_MESSAGE, format!("unknown client message: {e}"));
                    // Best effort: a client that does not read is not waited for.
                    let _ = notes.try_send(note);
                    continue;
                }
            },
            Ok(_) => continue,
        };
        if tx.send(pb::AttachRequest { msg: Some(req) }).await.is_err() {
            return InputEnded::Runner;
        }
    }
    InputEnded::Client
}
