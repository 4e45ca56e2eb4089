//! The API's error type: every failure a client sees is a status, a stable machine-readable `code`, a message that
//! says what to do, and `retry_after` (seconds) where waiting helps. The codes are the API contract's
//! (`boxyard_api::error::codes`, the list docs/api.md documents).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use boxyard_api::error::codes;

/// The JSON body of every error response (defined by the API contract, with the list of codes).
pub use boxyard_api::ErrorBody;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError { status, body: ErrorBody { code: code.into(), message: message.into(), retry_after: None } }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.body.retry_after = Some(secs);
        self
    }

    pub fn with_code(mut self, code: &str) -> Self {
        self.body.code = code.into();
        self
    }

    pub fn code(&self) -> &str {
        &self.body.code
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, codes::INVALID_REQUEST, message)
    }

    /// The object does not exist, or belongs to another org (never 403: existence is not disclosed).
    pub fn not_found(what: &str, id: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, format!("{what} {id} does not exist"))
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, codes::UNAUTHORIZED, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, codes::FORBIDDEN, message)
    }

    pub fn unavailable(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message).retry_after(1)
    }

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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
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
/// itself); anything else is a 500.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
                ApiError::unavailable(
                    codes::DATABASE_UNAVAILABLE,
                    format!("the database is unreachable ({e}); retry shortly"),
                )
            }
            sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
                ApiError::conflict(codes::ALREADY_EXISTS, format!("an object with the same unique name exists ({db})"))
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")) => {
                ApiError::unavailable(
                    codes::DATABASE_UNAVAILABLE,
                    format!("the database is restarting ({e}); retry shortly"),
                )
            }
            _ => ApiError::internal(format!("database error: {e}")),
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
