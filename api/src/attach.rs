//! The frames of the WebSocket attach (`GET /v1/boxes/{id}/executions/{eid}/attach`, docs/api.md "Attach"): one
//! encoder and decoder for the gateway, the SDK and the tests.
//!
//! - server → client, binary: an output record, [`OutputFrame`]: `[stream: u8 (1 stdout, 2 stderr)]
//!   [cursor: u64 big-endian][data]`;
//! - server → client, text: a JSON [`ServerMessage`] (`gap`, `exit`, `error`, `stdin_offset`);
//! - client → server, binary: stdin bytes (no header); text: a JSON [`ClientMessage`] (`stdin_offset`, `resize`,
//!   `signal`, `stdin_eof`).
//!
//! Text messages are encoded as JSON objects with their keys in lexicographic order (`{"from":0,"to":5,"type":"gap"}`),
//! the bytes the gateway has always sent. Decoders accept any key order.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// The response header of the upgrade that says how many bytes of stdin the process has received.
pub const STDIN_OFFSET_HEADER: &str = "x-boxyard-stdin-offset";

/// Which output stream bytes came from (tty executions: all stdout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// The process's stdout (id 1).
    Stdout,
    /// The process's stderr (id 2).
    Stderr,
}

impl OutputStream {
    /// The stream's id in a binary frame.
    pub const fn id(self) -> u8 {
        match self {
            OutputStream::Stdout => 1,
            OutputStream::Stderr => 2,
        }
    }

    /// The stream with this frame id, if any.
    pub const fn from_id(id: u8) -> Option<OutputStream> {
        match id {
            1 => Some(OutputStream::Stdout),
            2 => Some(OutputStream::Stderr),
            _ => None,
        }
    }
}

/// A frame that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A binary frame shorter than its 9-byte header.
    #[error("short output frame ({0} bytes; the header is 9)")]
    Short(usize),
    /// A binary frame whose stream id is neither 1 nor 2.
    #[error("unknown stream id {0}")]
    UnknownStream(u8),
    /// A text frame that is not a message of the protocol.
    #[error("bad text frame: {0}")]
    Json(String),
}

/// One output record: the bytes of `stream` at cursors `[cursor, cursor + data.len())`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFrame {
    /// Where the bytes came from.
    pub stream: OutputStream,
    /// The cursor of the first data byte.
    pub cursor: u64,
    /// The bytes.
    pub data: Bytes,
}

impl OutputFrame {
    /// Bytes of header before the data.
    pub const HEADER_LEN: usize = 9;

    /// The cursor after the last data byte.
    pub fn end(&self) -> u64 {
        self.cursor + self.data.len() as u64
    }

    /// The binary frame of this record.
    pub fn encode(&self) -> Vec<u8> {
        encode_output(self.stream, self.cursor, &self.data)
    }

    /// Decodes a binary frame (the data shares `frame`'s buffer).
    pub fn decode(frame: Bytes) -> Result<OutputFrame, FrameError> {
        if frame.len() < Self::HEADER_LEN {
            return Err(FrameError::Short(frame.len()));
        }
        let stream = OutputStream::from_id(frame[0]).ok_or(FrameError::UnknownStream(frame[0]))?;
        let mut cursor = [0u8; 8];
        cursor.copy_from_slice(&frame[1..Self::HEADER_LEN]);
        Ok(OutputFrame { stream, cursor: u64::from_be_bytes(cursor), data: frame.slice(Self::HEADER_LEN..) })
    }
}

/// The binary frame of `data` from `stream` starting at `cursor` (without building an [`OutputFrame`]).
pub fn encode_output(stream: OutputStream, cursor: u64, data: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(OutputFrame::HEADER_LEN + data.len());
    buf.push(stream.id());
    buf.extend_from_slice(&cursor.to_be_bytes());
    buf.extend_from_slice(data);
    buf
}

/// How an execution ended: the `exit` message of an attach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitResult {
    /// The process's exit code, if it exited.
    pub exit_code: Option<i32>,
    /// The signal that killed it (e.g. "SIGKILL").
    pub signal: Option<String>,
    /// Whether its timeout killed it.
    #[serde(default)]
    pub timed_out: bool,
    /// Whether `kill` killed it.
    #[serde(default)]
    pub killed: bool,
    /// Why it could not run or finish normally.
    pub error: Option<String>,
    /// The cursor after the last output byte.
    pub output_end: u64,
}

/// A text frame from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Output in `[from, to)` was dropped by the runner's retention; data resumes at `to`.
    Gap {
        /// The first cursor missing.
        from: u64,
        /// The cursor where data resumes.
        to: u64,
    },
    /// The execution finished and every output byte before `output_end` was sent; the server then closes.
    Exit(ExitResult),
    /// The attach failed (`runner_unavailable`, `runner_closed`: reconnect with the cursor; `invalid_message`: the
    /// connection stays open).
    Error {
        /// An error code (see [`crate::error::codes`]).
        code: String,
        /// What went wrong.
        message: String,
    },
    /// The process has received `offset` bytes of stdin.
    StdinOffset {
        /// Stdin bytes received so far (by every writer).
        offset: u64,
    },
    /// A message of a newer server that this version does not know: ignore it.
    #[serde(other)]
    Unknown,
}

/// A text frame from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Resize the execution's terminal.
    Resize {
        /// Lines.
        rows: u32,
        /// Columns.
        cols: u32,
    },
    /// Send a signal (a name such as "INT" or "SIGTERM", or a number) to the process group.
    Signal {
        /// The signal.
        signal: String,
    },
    /// Close stdin (after the input sent before).
    StdinEof,
    /// The next binary frame starts at stdin byte `offset` (bytes the process already got are skipped).
    StdinOffset {
        /// The stdin offset of the next binary frame.
        offset: u64,
    },
}

/// Encodes a message as JSON with sorted keys.
fn sorted_json(v: &impl Serialize) -> String {
    // A `serde_json::Value` object is a sorted map: this is what gives the key order.
    serde_json::to_value(v).expect("attach messages serialize").to_string()
}

impl ServerMessage {
    /// The text frame of this message.
    pub fn encode(&self) -> String {
        sorted_json(self)
    }

    /// Decodes a text frame.
    pub fn decode(text: &str) -> Result<ServerMessage, FrameError> {
        serde_json::from_str(text).map_err(|e| FrameError::Json(e.to_string()))
    }
}

impl ClientMessage {
    /// The text frame of this message.
    pub fn encode(&self) -> String {
        sorted_json(self)
    }

    /// Decodes a text frame; the error says what is wrong with it (the server sends it back as `invalid_message`).
    pub fn decode(text: &str) -> Result<ClientMessage, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_frames_round_trip() {
        for (stream, cursor, data) in [
            (OutputStream::Stdout, 0u64, &b"hello\n"[..]),
            (OutputStream::Stderr, u64::MAX - 3, &b"err"[..]),
            (OutputStream::Stdout, 42, &b""[..]),
        ] {
            let f = OutputFrame { stream, cursor, data: Bytes::copy_from_slice(data) };
            let bytes = f.encode();
            assert_eq!(bytes.len(), 9 + data.len());
            assert_eq!(bytes, encode_output(stream, cursor, data));
            assert_eq!(OutputFrame::decode(Bytes::from(bytes)).unwrap(), f);
        }
        // The layout of docs/api.md, byte for byte.
        let f = OutputFrame { stream: OutputStream::Stderr, cursor: 0x0102, data: Bytes::from_static(b"ab") };
        assert_eq!(f.encode(), [2, 0, 0, 0, 0, 0, 0, 1, 2, b'a', b'b']);
        assert_eq!(f.end(), 0x0104);
    }

    #[test]
    fn bad_output_frames_are_errors() {
        assert_eq!(OutputFrame::decode(Bytes::from_static(&[1, 0, 0])), Err(FrameError::Short(3)));
        assert_eq!(
            OutputFrame::decode(Bytes::from_static(&[3, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(FrameError::UnknownStream(3))
        );
        assert_eq!(OutputFrame::decode(Bytes::from_static(&[0; 9])), Err(FrameError::UnknownStream(0)));
    }

    /// Each server message encodes to the bytes the gateway sends (sorted keys) and decodes back.
    #[test]
    fn server_messages_round_trip_with_their_exact_bytes() {
        let exit = ExitResult {
            exit_code: Some(3),
            signal: None,
            timed_out: false,
            killed: false,
            error: None,
            output_end: 12,
        };
        let cases = [
            (ServerMessage::Gap { from: 0, to: 5 }, r#"{"from":0,"to":5,"type":"gap"}"#),
            (
                ServerMessage::Exit(exit),
                r#"{"error":null,"exit_code":3,"killed":false,"output_end":12,"signal":null,"timed_out":false,"type":"exit"}"#,
            ),
            (
                ServerMessage::Error { code: "runner_closed".into(), message: "m".into() },
                r#"{"code":"runner_closed","message":"m","type":"error"}"#,
            ),
            (ServerMessage::StdinOffset { offset: 7 }, r#"{"offset":7,"type":"stdin_offset"}"#),
        ];
        for (m, text) in cases {
            assert_eq!(m.encode(), text);
            assert_eq!(ServerMessage::decode(text).unwrap(), m);
        }
        // Any key order, and unknown messages of a newer server.
        assert_eq!(
            ServerMessage::decode(r#"{"type":"gap","to":9,"from":1}"#).unwrap(),
            ServerMessage::Gap { from: 1, to: 9 }
        );
        assert_eq!(ServerMessage::decode(r#"{"type":"progress"}"#).unwrap(), ServerMessage::Unknown);
        let exit =
            ServerMessage::decode(r#"{"type":"exit","exit_code":null,"signal":"SIGKILL","error":null,"output_end":0}"#);
        assert!(matches!(exit, Ok(ServerMessage::Exit(ExitResult { signal: Some(_), killed: false, .. }))));
        assert!(matches!(ServerMessage::decode("not json"), Err(FrameError::Json(_))));
    }

    #[test]
    fn client_messages_round_trip_with_their_exact_bytes() {
        let cases = [
            (ClientMessage::Resize { rows: 40, cols: 120 }, r#"{"cols":120,"rows":40,"type":"resize"}"#),
            (ClientMessage::Signal { signal: "INT".into() }, r#"{"signal":"INT","type":"signal"}"#),
            (ClientMessage::StdinEof, r#"{"type":"stdin_eof"}"#),
            (ClientMessage::StdinOffset { offset: 65536 }, r#"{"offset":65536,"type":"stdin_offset"}"#),
        ];
        for (m, text) in cases {
            assert_eq!(m.encode(), text);
            assert_eq!(ClientMessage::decode(text).unwrap(), m);
        }
        assert!(ClientMessage::decode(r#"{"type":"resize","rows":1,"cols":2,"extra":3}"#).is_err());
        assert!(ClientMessage::decode(r#"{"type":"reboot"}"#).is_err());
    }
}
