//! The control socket's wire format: requests parsed from one line of JSON, answers written as one line of JSON.
//! Pure functions, unit-tested without a VM.

use serde::Deserialize;
use serde_json::{Value, json};

/// The longest request line accepted (bytes, newline excluded).
pub const MAX_LINE: usize = 4096;

/// A request to the VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiRequest {
    /// The VM's state, size and uptime.
    Status,
    /// Stop every vCPU (the guest executes nothing until resumed; devices keep their state).
    Pause,
    /// Let the vCPUs run again.
    Resume,
    /// Press the guest's ACPI power button: the guest powers off cleanly and the VMM exits 0.
    Stop,
    /// End the VMM at once (after answering), with exit status [`crate::vstate::ExitReason::Killed`]'s code.
    Kill,
    /// The VMM's counters.
    Metrics,
}

/// Why a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The line is not a request (not JSON, unknown op, extra fields, too long).
    BadRequest,
    /// The request is valid but the VM's state does not allow it now.
    InvalidState,
    /// The VMM tried and failed.
    Failed,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::Failed => "failed",
        }
    }
}

/// A request line as sent: exactly one field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    op: String,
}

/// Parses one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<ApiRequest, String> {
    const HINT: &str =
        "send one JSON object per line, e.g. {\"op\":\"status\"}; ops: status, pause, resume, stop, kill, metrics";
    if line.len() > MAX_LINE {
        return Err(format!("request line of {} bytes, at most {MAX_LINE}", line.len()));
    }
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("not JSON ({e}); {HINT}"))?;
    if !v.is_object() {
        return Err(format!("not a JSON object; {HINT}"));
    }
    let l: Line = serde_json::from_value(v).map_err(|e| format!("not a request ({e}); {HINT}"))?;
    Ok(match l.op.as_str() {
        "status" => ApiRequest::Status,
        "pause" => ApiRequest::Pause,
        "resume" => ApiRequest::Resume,
        "stop" => ApiRequest::Stop,
        "kill" => ApiRequest::Kill,
        "metrics" => ApiRequest::Metrics,
        other => return Err(format!("unknown op {other:?}; {HINT}")),
    })
}

/// A successful answer: `fields` (an object) with `"ok": true` added.
pub fn ok(fields: Value) -> Value {
    let mut v = match fields {
        Value::Object(m) => Value::Object(m),
        Value::Null => json!({}),
        other => json!({ "result": other }),
    };
    v["ok"] = Value::Bool(true);
    v
}

/// A failed answer.
pub fn error(code: ErrorCode, message: impl Into<String>) -> Value {
    json!({ "ok": false, "error": { "code": code.as_str(), "message": message.into() } })
}

/// An answer as one line, newline included.
pub fn encode(answer: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec(answer).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    b.push(b'\n');
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_parses() {
        for (line, req) in [
            (r#"{"op":"status"}"#, ApiRequest::Status),
            (r#"{"op":"pause"}"#, ApiRequest::Pause),
            (r#"{"op":"resume"}"#, ApiRequest::Resume),
            (r#"{"op":"stop"}"#, ApiRequest::Stop),
            (r#" { "op" : "kill" } "#, ApiRequest::Kill),
            (r#"{"op":"metrics"}"#, ApiRequest::Metrics),
        ] {
            assert_eq!(parse_request(line.as_bytes()), Ok(req), "{line}");
        }
    }

    #[test]
    fn malformed_lines_are_refused_with_a_hint() {
        for line in [
            &b""[..],
            b"status",
            b"{}",
            br#"{"op":"reboot"}"#,
            br#"{"op":"pause","now":true}"#,
            br#"{"op":7}"#,
            b"\xff\xfe",
            br#"["status"]"#,
        ] {
            let e = parse_request(line).unwrap_err();
            assert!(e.contains("ops: status, pause"), "{e}");
        }
        let long = format!(r#"{{"op":"status","pad":"{}"}}"#, "x".repeat(MAX_LINE));
        assert!(parse_request(long.as_bytes()).unwrap_err().contains("at most 4096"));
    }

    #[test]
    fn answers_are_single_lines_with_ok() {
        let a = encode(&ok(json!({"state": "running"})));
        assert_eq!(a, b"{\"ok\":true,\"state\":\"running\"}\n");
        assert_eq!(ok(Value::Null), json!({"ok": true}));
        let e: Value = serde_json::from_slice(&encode(&error(ErrorCode::InvalidState, "not\npaused"))).unwrap();
        assert_eq!(e["error"]["code"], "invalid_state");
        assert_eq!(e["ok"], false);
        assert_eq!(encode(&error(ErrorCode::Failed, "a\nb")).iter().filter(|&&c| c == b'\n').count(), 1);
    }
}
