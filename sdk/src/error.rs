//! The SDK's error type.

/// What went wrong with a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with an error: its HTTP status, stable `code` and message.
    #[error("{code}: {message} (HTTP {status})")]
    Api { status: u16, code: String, message: String, retry_after: Option<u64> },
    /// The server could not be reached or the connection failed.
    #[error("cannot reach the Boxyard API at {url}: {message}")]
    Transport { url: String, message: String },
    /// An attach could not be resumed within its retry budget.
    #[error("the attach could not be resumed after {attempts} attempts from cursor {cursor}: {last}")]
    AttachGaveUp { attempts: u32, cursor: u64, last: String },
    /// The server sent something this SDK does not understand.
    #[error("unexpected response: {0}")]
    Protocol(String),
}

impl Error {
    /// The API error code (`not_found`, `quota_exceeded`, ...), if this is an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
