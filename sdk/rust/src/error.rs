//! The SDK's error type.

/// What went wrong with a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API answered with an error: its HTTP status, stable `code` (see [`crate::codes`]) and message.
    #[error("{code}: {message} (HTTP {status})")]
    Api {
        /// The HTTP status (0 for an error message on an attach's WebSocket).
        status: u16,
        /// The stable error code, e.g. `not_found`.
        code: String,
        /// What went wrong and what to do about it.
        message: String,
        /// Seconds after which a retry may succeed.
        retry_after: Option<u64>,
        /// The request's id (the response's `x-request-id`): quote it when reporting a problem.
        request_id: Option<String>,
    },
    /// The server could not be reached or the connection failed.
    #[error("cannot reach the Boxyard API at {url}: {message}")]
    Transport {
        /// The API's URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// An attach could not be resumed within its retry budget.
    #[error("the attach could not be resumed after {attempts} attempts from cursor {cursor}: {last}")]
    AttachGaveUp {
        /// Consecutive failed attempts.
        attempts: u32,
        /// The cursor it would have resumed from.
        cursor: u64,
        /// Why the last attempt failed.
        last: String,
    },
    /// The server sent something this SDK does not understand.
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// The call's arguments cannot make a request (e.g. an HTTP method that does not exist).
    #[error("invalid request: {0}")]
    InvalidInput(String),
}

impl Error {
    /// The API error code (`not_found`, `quota_exceeded`, ...), if this is an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The API error of an error response: its status and its [`boxyard_api::ErrorBody`] (a body that is not one
    /// gives the code `http_error`).
    pub(crate) fn from_response(status: u16, body: &[u8]) -> Error {
        match Error::from_response_body(body) {
            Some(b) => Error::Api {
                status,
                code: b.code,
                message: b.message,
                retry_after: b.retry_after,
                request_id: b.request_id,
            },
            None => Error::Api {
                status,
                code: "http_error".into(),
                message: format!("HTTP {status}"),
                retry_after: None,
                request_id: None,
            },
        }
    }
}

impl Error {
    /// The error body of a response, if it is one.
    pub(crate) fn from_response_body(body: &[u8]) -> Option<boxyard_api::ErrorBody> {
        serde_json::from_slice(body).ok()
    }
}

/// The result of an SDK call.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_response_becomes_an_api_error_with_its_code() {
        let e = Error::from_response(503, br#"{"code":"no_capacity","message":"no room","retry_after":10}"#);
        assert!(
            matches!(&e, Error::Api { status: 503, code, message, retry_after: Some(10), .. } if code == "no_capacity" && message == "no room"),
            "{e:?}"
        );
        assert_eq!(e.code(), Some("no_capacity"));
        assert_eq!(e.to_string(), "no_capacity: no room (HTTP 503)");
    }

    #[test]
    fn a_body_that_is_not_an_error_body_still_gives_the_status() {
        let e = Error::from_response(502, b"<html>bad gateway</html>");
        assert!(matches!(&e, Error::Api { status: 502, code, retry_after: None, .. } if code == "http_error"), "{e:?}");
        assert_eq!(e.to_string(), "http_error: HTTP 502 (HTTP 502)");
        assert_eq!(Error::Protocol("x".into()).code(), None);
    }
}
