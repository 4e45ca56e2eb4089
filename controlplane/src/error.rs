//! The API's error type: every failure a client sees is a status, a stable machine-readable `code`, a message that
//! says what to do, and `retry_after` (seconds) where waiting helps. The codes are the API contract's
//! (`boxyard_api::error::codes`, the list docs/api.md documents).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use boxyard_api::error::codes;

/// The JSON body of every error response (defined by the API contract, with the list of codes).
pub use boxyard_api::ErrorBody;

/// A failure as the client receives it: the HTTP status and the JSON error body (logged at `warn` when it is a 5xx).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The HTTP status of the response.
    pub status: StatusCode,
    /// The JSON body: code, message and `retry_after`.
    pub body: ErrorBody,
}

/// The result of a handler or of a lifecycle operation a handler calls.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with any status and code, without `retry_after`.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody { code: code.into(), message: message.into(), retry_after: None, request_id: None },
        }
    }

    /// Tells the client to retry after `secs` seconds (the body's `retry_after` and the `Retry-After` header).
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.body.retry_after = Some(secs);
        self
    }

    /// The same error with a more specific machine-readable code.
    pub fn with_code(mut self, code: &str) -> Self {
        self.body.code = code.into();
        self
    }

    /// The machine-readable code the client will see.
    pub fn code(&self) -> &str {
        &self.body.code
    }

    /// 400: the request cannot be read (malformed JSON, header or query), with its own code.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 422 `invalid_request`: the request is well formed but a value is not acceptable.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, codes::INVALID_REQUEST, message)
    }

    /// The object does not exist, or belongs to another org (never 403: existence is not disclosed).
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, format!("{what} {id} does not exist"))
    }

    /// 409: the request clashes with the object's current state or with another object.
    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 401: no credential, or one the control plane does not know.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED, message)
    }

    /// 403: a known credential whose role does not allow the operation.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, codes::FORBIDDEN, message)
    }

    /// 503 with `retry_after` 1: a dependency (database, runner, S3) is unreachable for now.
    pub fn unavailable(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message).retry_after(1)
    }

    /// 500 `internal`: a failure of the control plane itself.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, codes::INTERNAL, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.body.code, self.status.as_u16(), self.body.message)
    }
}

impl std::error::Error for ApiError {}

/// Longest message sent (a message quoting a huge client value is cut).
const MAX_MESSAGE: usize = 2048;

/// A message as sent: NUL bytes a client sent (and that a message quotes) written as `\0`, at most
/// [`MAX_MESSAGE`] bytes.
fn printable(mut m: String) -> String {
    if m.contains('\0') {
        m = m.replace('\0', "\\0");
    }
    if m.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m.push('…');
    }
    m
}

impl IntoResponse for ApiError {
    fn into_response(mut self) -> Response {
        self.body.message = printable(self.body.message);
        if self.status.is_server_error() {
            tracing::warn!(code = %self.body.code, status = self.status.as_u16(), "{}", self.body.message);
        }
        let retry = self.body.retry_after;
        let mut resp = (self.status, axum::Json(self.body)).into_response();
        if let Some(secs) = retry {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// Database failures: a lost or unreachable database is a 503 with `retry_after` (the control plane reconnects by
/// itself); anything else is a 500. The database's own words never reach the client: they are logged (in the
/// request's span, with its request id) and the client gets the code and the request id.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
                tracing::warn!("database unreachable: {e}");
                ApiError::unavailable(codes::DATABASE_UNAVAILABLE, "the database is unreachable; retry shortly")
            }
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                tracing::info!("unique violation: {db}");
                ApiError::conflict(codes::ALREADY_EXISTS, "an object with the same unique name exists; choose another")
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")) => {
                tracing::warn!("database restarting: {e}");
                ApiError::unavailable(codes::DATABASE_UNAVAILABLE, "the database is restarting; retry shortly")
            }
            _ => {
                tracing::error!("database error: {e}");
                ApiError::internal("the control plane failed on a database error")
            }
        }
    }
}

/// Errors from a runner call, seen by an API client.
impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        use tonic::Code;
        let msg = s.message().to_string();
        match s.code() {
            Code::InvalidArgument | Code::OutOfRange => ApiError::invalid(msg),
            Code::NotFound => ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, msg),
            Code::AlreadyExists => ApiError::conflict(codes::ALREADY_EXISTS, msg),
            Code::FailedPrecondition => ApiError::conflict(codes::FAILED_PRECONDITION, msg),
            Code::ResourceExhausted => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, codes::RUNNER_BUSY, msg).retry_after(1)
            }
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                ApiError::unavailable(codes::RUNNER_UNAVAILABLE, format!("the box's runner is unreachable: {msg}"))
            }
            Code::Unimplemented => ApiError::new(StatusCode::NOT_IMPLEMENTED, codes::NOT_IMPLEMENTED, msg),
            Code::DataLoss => ApiError::new(StatusCode::BAD_GATEWAY, codes::SNAPSHOT_CORRUPT, msg),
            _ => ApiError::new(StatusCode::BAD_GATEWAY, codes::RUNNER_ERROR, format!("the runner failed: {msg}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_never_carry_a_nul_byte_nor_a_whole_huge_value() {
        assert_eq!(printable("unknown field `a\0b`".into()), "unknown field `a\\0b`");
        let huge = printable(format!("bad value {}", "é".repeat(5000)));
        assert!(huge.len() <= MAX_MESSAGE + "…".len() && huge.ends_with('…'), "{}", huge.len());
        assert_eq!(printable("fine".into()), "fine");
    }
}
