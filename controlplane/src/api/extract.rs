//! Request extractors whose failures are API errors (JSON `{code, message}`), not axum's plain-text rejections, and
//! which check what they extract against the operation's schema in the served OpenAPI document
//! ([`super::contract`]) before a handler sees it.

use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::Method;
use axum::http::request::Parts;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::contract::{Part, contract};
use crate::error::ApiError;

/// The operation a request was routed to: its method and its path as the document names it (a `MatchedPath` is a
/// shared string: cloning it copies nothing).
fn operation(method: &Method, matched: Option<&MatchedPath>) -> Result<(Method, MatchedPath), ApiError> {
    let path = matched.ok_or_else(|| ApiError::internal("a validated extractor ran outside a matched route"))?;
    Ok((method.clone(), path.clone()))
}

/// A JSON request body, checked against the operation's body schema. A body of no bytes reads as `{}` (so all-default
/// requests need no body). `hash` is the SHA-256 of the raw body, for idempotency checks.
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
        let (method, path) = operation(req.method(), req.extensions().get::<MatchedPath>())?;
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
        // No body at all reads as `{}`; anything else (whitespace included) must be JSON.
        let raw: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
        let value = parse(&method, path.as_str(), raw)?;
        Ok(Body { value, hash: Sha256::digest(raw).to_vec() })
    }
}

/// Parses a JSON body of the operation `method path`: syntax errors are 400 `invalid_json`; a well-formed body the
/// operation's schema refuses (a wrong type, a value out of range, a NUL byte, an unknown field) is 422
/// `invalid_request` naming the field.
pub fn parse<T: DeserializeOwned>(method: &Method, path: &str, raw: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(raw)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}")))?;
    contract().check(method, path, Part::Body, &value)?;
    integral_numbers(&mut value);
    serde_json::from_value(value).map_err(|e| ApiError::invalid(format!("invalid request: {e}")))
}

/// JSON Schema counts `2.0` as the integer 2 (and the document's integers accept it): such numbers become integers
/// before the body is read into its type.
fn integral_numbers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Number(n) if n.is_f64() => {
            // Every float of magnitude below 2^63 with no fraction is an integer that i64 holds exactly.
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() < 9.2e18
            {
                *n = serde_json::Number::from(f as i64);
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(integral_numbers),
        serde_json::Value::Object(m) => m.values_mut().for_each(integral_numbers),
        _ => {}
    }
}

/// Query parameters, checked against the operation's parameter schemas: unknown or malformed ones (a number that is
/// not one) are 400 `invalid_query`; values the schema refuses are 422 `invalid_request`.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Serialize> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let (method, path) = operation(&parts.method, parts.extensions.get::<MatchedPath>())?;
        let q = parts.uri.query().unwrap_or("");
        let value: T = serde_urlencoded::from_str(q)
            .map_err(|e| ApiError::bad_request("invalid_query", format!("invalid query parameters: {e}")))?;
        let typed = serde_json::to_value(&value).map_err(|e| ApiError::internal(format!("query as JSON: {e}")))?;
        contract().check(&method, path.as_str(), Part::Query, &typed)?;
        Ok(Query(value))
    }
}

/// An id from the path: anything that is not a UUID cannot name an object, so it is a 404.
pub fn id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found(what, format!("{raw:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_floats_become_integers_and_others_stay() {
        let mut v = serde_json::json!({"a": 2.0, "b": [9007199254740991.0, -1e18], "c": 1.5, "d": 1e300, "e": 3});
        integral_numbers(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"a": 2, "b": [9007199254740991i64, -1000000000000000000i64], "c": 1.5, "d": 1e300, "e": 3})
        );
        assert!(v["a"].is_i64() && v["b"][0].is_i64() && v["d"].is_f64());
    }
}
