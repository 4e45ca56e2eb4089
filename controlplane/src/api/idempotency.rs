//! `Idempotency-Key` on create requests: the first request with a key runs and its response (success or client
//! error) is stored; a retry with the same key and the same body gets that response again, without running twice.
//! The same key with another body is 422 `idempotency_key_reused`; a retry while the first is still running is 409
//! `request_in_progress`. Outcomes a retry may change (5xx, 409, 429) are not stored, so the retry runs again.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::store::idempotency as store;

/// The request header that carries the key (header names are matched case-insensitively).
pub const HEADER: &str = "idempotency-key";

/// A claimed key: call [`Claim::finish`] with the response.
pub struct Claim {
    org: Uuid,
    key: String,
}

/// What a handler does with a request, once its key (if any) is looked up.
pub enum Begin {
    /// No key given: run normally.
    None,
    /// The key is ours: run, then finish.
    Run(Claim),
    /// The stored response of an earlier request.
    Replay(Response),
}

/// Looks up the request's key for `operation`: claims it if new, replays a stored response, or refuses a reused
/// key (422) or one whose first request is still running (409, retry in a second).
pub async fn begin(st: &AppState, headers: &HeaderMap, org: Uuid, operation: &str, hash: &[u8]) -> ApiResult<Begin> {
    let Some(v) = headers.get(HEADER) else { return Ok(Begin::None) };
    let key = v
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        })?
        .to_string();
    if store::claim(&st.db, org, &key, operation, hash).await? {
        return Ok(Begin::Run(Claim { org, key }));
    }
    // A claim left unfinished for long by a replica that died is taken over.
    if store::take_over(&st.db, org, &key, operation, hash).await? {
        return Ok(Begin::Run(Claim { org, key }));
    }
    let (op, h, status, body) = store::stored(&st.db, org, &key).await?;
    if op != operation || h != hash {
        return Err(ApiError::invalid(format!(
            "Idempotency-Key {key:?} was used for another request; use a new key for a new request"
        ))
        .with_code("idempotency_key_reused"));
    }
    match (status, body) {
        (Some(s), Some(b)) => {
            let status = StatusCode::from_u16(s as u16).unwrap_or(StatusCode::OK);
            let mut resp = (status, axum::Json(b)).into_response();
            resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            Ok(Begin::Replay(resp))
        }
        _ => Err(ApiError::conflict(
            "request_in_progress",
            format!("a request with Idempotency-Key {key:?} is still running; retry in a moment"),
        )
        .retry_after(1)),
    }
}

impl Claim {
    /// Stores a final outcome (success, or a client error that a retry would repeat), or forgets the key after an
    /// outcome a retry may change (server errors, 409 conflicts of the moment, 429).
    pub async fn finish(self, st: &AppState, status: StatusCode, body: &serde_json::Value) {
        let transient = status.is_server_error()
            || matches!(status, StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT);
        let r = if transient {
            store::forget(&st.db, self.org, &self.key).await
        } else {
            store::finish(&st.db, self.org, &self.key, i32::from(status.as_u16()), body).await
        };
        if let Err(e) = r {
            tracing::warn!("cannot record the outcome of Idempotency-Key {:?}: {e}", self.key);
        }
    }
}

/// Runs `f` under the idempotency protocol and returns its response (or the stored one).
///
/// `f` runs in a task of its own: a client that disconnects does not cut a create in the middle, and the outcome
/// is recorded for its retry.
pub async fn run<T, F>(st: &AppState, headers: &HeaderMap, org: Uuid, op: &str, hash: &[u8], f: F) -> Response
where
    T: serde::Serialize + Send + 'static,
    F: std::future::Future<Output = ApiResult<(StatusCode, T)>> + Send + 'static,
{
    let claim = match begin(st, headers, org, op, hash).await {
        Ok(Begin::Replay(r)) => return r,
        Ok(Begin::None) => None,
        Ok(Begin::Run(c)) => Some(c),
        Err(e) => return e.into_response(),
    };
    let st2 = st.clone();
    let task = tokio::spawn(tracing::Instrument::in_current_span(async move {
        let (status, body) = match f.await {
            Ok((s, v)) => (s, serde_json::to_value(v).unwrap_or_default()),
            Err(e) => (e.status, serde_json::to_value(&e.body).unwrap_or_default()),
        };
        if let Some(c) = claim {
            c.finish(&st2, status, &body).await;
        }
        (status, body)
    }));
    let (status, body) = match task.await {
        Ok(r) => r,
        Err(e) => return ApiError::internal(format!("the request failed: {e}")).into_response(),
    };
    let mut resp = (status, axum::Json(&body)).into_response();
    if let Some(secs) = body.get("retry_after").and_then(|v| v.as_u64()) {
        resp.headers_mut().insert(axum::http::header::RETRY_AFTER, secs.into());
    }
    resp
}
