//! Request extractors whose failures are API errors (JSON `{code, message}`), not axum's plain-text rejections.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::ApiError;

/// A JSON request body. An empty body reads as `{}` (so all-default requests need no body). `hash` is the SHA-256
/// of the raw body, for idempotency checks.
pub struct Body<T> {
    /// The decoded body.
    pub value: T,
    /// SHA-256 of the body's bytes as received.
    pub hash: Vec<u8>,
}

/// Largest JSON body accepted.
const MAX_JSON: usize = 1 << 20;

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(e.status(), "body_too_large", format!("JSON bodies are limited to {MAX_JSON} bytes"))
            } else {
                ApiError::bad_request("invalid_body", format!("cannot read the request body: {}", e.body_text()))
            }
        })?;
        if bytes.len() > MAX_JSON {
            return Err(ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("JSON bodies are limited to {MAX_JSON} bytes"),
            ));
        }
        let raw: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        let value = parse(raw)?;
        Ok(Body { value, hash: Sha256::digest(raw).to_vec() })
    }
}

/// Parses JSON: syntax errors are 400 `invalid_json`; a well-formed body of the wrong shape (unknown field, wrong
/// type, negative number for an unsigned field) is 422 `invalid_request`.
pub fn parse<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(raw).map_err(|e| match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof | serde_json::error::Category::Io => {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        }
        serde_json::error::Category::Data => ApiError::invalid(format!("invalid request: {e}")),
    })
}

/// Query parameters; malformed ones are 400 `invalid_query`.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        serde_urlencoded::from_str(q)
            .map(Query)
            .map_err(|e| ApiError::bad_request("invalid_query", format!("invalid query parameters: {e}")))
    }
}

/// An id from the path: anything that is not a UUID cannot name an object, so it is a 404.
pub fn id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(what, format!("{raw:?}")))
}
