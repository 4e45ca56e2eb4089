//! Request ids: every request to the gateway gets one, the client's `x-request-id` when it sent a usable one (1 to
//! 128 visible ASCII characters) or else a new UUID. The id is in the request's span (so in every log line of the
//! request), on the response's `x-request-id` header, and in every JSON error body as `request_id` (an `internal`
//! error's message also names it, for a bug report).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The header that carries a request's id, both ways.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-chosen id kept (a longer one is replaced).
pub const MAX_LEN: usize = 128;

/// Largest error body rewritten to carry the id (error bodies are a few hundred bytes; messages are cut at 2 KiB).
const MAX_ERROR_BODY: usize = 1 << 20;

/// The request's id, in the request's extensions for handlers that want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The client's id when it is usable, else a new one.
pub fn choose(sent: Option<&HeaderValue>) -> String {
    sent.and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= MAX_LEN && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// The outermost layer of the router: decides the id before the request's span is made (the span reads it from
/// the header), and puts it on the response.
pub async fn layer(mut req: Request, next: Next) -> Response {
    let id = choose(req.headers().get(&HEADER));
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    req.headers_mut().insert(HEADER, value.clone());
    req.extensions_mut().insert(RequestId(id.clone()));
    let resp = next.run(req).await;
    let mut resp = if resp.status().is_client_error() || resp.status().is_server_error() {
        with_id_in_body(resp, &id).await
    } else {
        resp
    };
    resp.headers_mut().insert(HEADER, value);
    resp
}

/// Adds `request_id` to a JSON error body (and the id to an `internal` error's message).
async fn with_id_in_body(resp: Response, id: &str) -> Response {
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        // Not an error body of ours (too large, or it broke): nothing sensible to return but an empty one.
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::empty());
    };
    let rewritten = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(mut m)) => {
            if m.get("code").and_then(|c| c.as_str()) == Some(boxyard_api::error::codes::INTERNAL)
                && let Some(serde_json::Value::String(msg)) = m.get_mut("message")
            {
                msg.push_str(&format!(" (request id {id}: quote it when you report this)"));
            }
            m.insert("request_id".into(), serde_json::Value::String(id.to_string()));
            serde_json::to_vec(&m).ok()
        }
        _ => None,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(rewritten.unwrap_or_else(|| bytes.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_client_id_is_kept_and_anything_else_replaced() {
        assert_eq!(choose(Some(&HeaderValue::from_static("abc-123_x.y"))), "abc-123_x.y");
        let fresh = |v: Option<&HeaderValue>| uuid::Uuid::parse_str(&choose(v)).is_ok();
        assert!(fresh(None));
        assert!(fresh(Some(&HeaderValue::from_static(""))));
        assert!(fresh(Some(&HeaderValue::from_static("has space"))));
        assert!(fresh(Some(&HeaderValue::from_str(&"x".repeat(MAX_LEN + 1)).unwrap())));
        assert_eq!(choose(Some(&HeaderValue::from_str(&"x".repeat(MAX_LEN)).unwrap())).len(), MAX_LEN);
        assert!(fresh(Some(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap())));
    }
}
