//! The runner's error type and its mapping to gRPC status codes.
//!
//! Every message names what went wrong and, where the caller can do something about it, what to do.

use tonic::{Code, Status};

/// An error of the runner API, with the gRPC code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A request field is malformed (INVALID_ARGUMENT).
    #[error("{0}")]
    InvalidArgument(String),
    /// The object does not exist (NOT_FOUND).
    #[error("{what} {id:?} not found")]
    NotFound {
        /// What was looked up ("box", "execution").
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The id exists with something else (ALREADY_EXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// The object is in the wrong state for the call (FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A cursor or size outside what exists (OUT_OF_RANGE).
    #[error("{0}")]
    OutOfRange(String),
    /// Not available in this build or configuration (UNIMPLEMENTED).
    #[error("{0}")]
    Unimplemented(String),
    /// Transient: the guest agent or VM did not answer (UNAVAILABLE); retrying may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// Stored data is not what it must be (DATA_LOSS): a snapshot image whose digest does not match.
    #[error("{0}")]
    Corrupt(String),
    /// The runner itself failed (INTERNAL): disk, VM backend.
    #[error("{0}")]
    Internal(String),
    /// A state record was written by a newer runner (FAILED_PRECONDITION); it is left as it is.
    #[error(
        "{}: this {kind} has format version {version}, newer than this runner reads (up to {supported}); it was \
         written by a newer boxyard-runner: upgrade this runner (the record is left as it is)",
        path.display()
    )]
    NewerRecord {
        /// The record's file.
        path: std::path::PathBuf,
        /// What it is.
        kind: &'static str,
        /// Its version.
        version: u32,
        /// The newest version this runner reads.
        supported: u32,
    },
}

impl RunnerError {
    /// NOT_FOUND for `what` `id`.
    pub fn not_found(what: &'static str, id: &str) -> Self {
        RunnerError::NotFound { what, id: id.to_string() }
    }

    /// Wraps a status from a guest agent, keeping its code (the agent's codes have the same meaning here) and
    /// saying where it came from.
    pub fn from_agent(context: &str, s: Status) -> Self {
        let msg = format!("{context}: {}", s.message());
        match s.code() {
            Code::InvalidArgument => RunnerError::InvalidArgument(msg),
            Code::NotFound => RunnerError::FailedPrecondition(msg),
            Code::AlreadyExists => RunnerError::AlreadyExists(msg),
            Code::FailedPrecondition => RunnerError::FailedPrecondition(msg),
            Code::OutOfRange => RunnerError::OutOfRange(msg),
            Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded | Code::Unknown => {
                RunnerError::Unavailable(format!("{msg} (the box's guest agent did not answer; retry)"))
            }
            _ => RunnerError::Internal(msg),
        }
    }
}

impl From<RunnerError> for Status {
    fn from(e: RunnerError) -> Status {
        let code = match &e {
            RunnerError::InvalidArgument(_) => Code::InvalidArgument,
            RunnerError::NotFound { .. } => Code::NotFound,
            RunnerError::AlreadyExists(_) => Code::AlreadyExists,
            RunnerError::FailedPrecondition(_) => Code::FailedPrecondition,
            RunnerError::OutOfRange(_) => Code::OutOfRange,
            RunnerError::Unimplemented(_) => Code::Unimplemented,
            RunnerError::Unavailable(_) => Code::Unavailable,
            RunnerError::Corrupt(_) => Code::DataLoss,
            RunnerError::Internal(_) => Code::Internal,
            RunnerError::NewerRecord { .. } => Code::FailedPrecondition,
        };
        Status::new(code, e.to_string())
    }
}

impl From<crate::execlog::LogError> for RunnerError {
    fn from(e: crate::execlog::LogError) -> Self {
        RunnerError::Internal(e.to_string())
    }
}

/// A result with a [`RunnerError`].
pub type Result<T, E = RunnerError> = std::result::Result<T, E>;
