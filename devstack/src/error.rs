//! The one error type of the dev stack: what failed to start or stop, with the log lines that say why.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// A result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a part of the stack could not be started, reached or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file system or process call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A Boxyard binary is not where the build puts it.
    #[error("{name} is missing (looked in {searched}): build the workspace first (cargo build --workspace)")]
    MissingBinary {
        /// The binary's name.
        name: String,
        /// The directories searched, comma-separated.
        searched: String,
    },
    /// A PostgreSQL program is installed nowhere we look.
    #[error("{tool} not found in PATH or /usr/lib/postgresql/*/bin: install PostgreSQL (scripts/setup.sh does)")]
    MissingPostgres {
        /// The program (initdb, pg_ctl).
        tool: String,
    },
    /// A helper program ran and failed.
    #[error("{tool} failed ({status}): {output}")]
    Tool {
        /// The program and what it was asked to do.
        tool: String,
        /// Its exit status.
        status: ExitStatus,
        /// What it printed (stderr, then the server log where there is one).
        output: String,
    },
    /// The `postgres` user (the cluster's owner when we run as root) cannot traverse a directory above the data
    /// directory.
    #[error("the postgres user cannot reach {data_dir} ({blocking} is mode {mode:o}): pick another directory")]
    Unreachable {
        /// The data directory.
        data_dir: PathBuf,
        /// The directory without the search bit for others.
        blocking: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A process ended before it was serving.
    #[error("{what} exited ({status}) during start-up; {}:\n{log_tail}", log.display())]
    ExitedDuringStartup {
        /// The process (e.g. "the control plane").
        what: String,
        /// How it ended ("unknown" for a detached process).
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        log_tail: String,
    },
    /// A process did not write its address file in time.
    #[error("{what} did not start within {timeout:?}; {}:\n{log_tail}", log.display())]
    StartTimeout {
        /// The process.
        what: String,
        /// How long we waited.
        timeout: Duration,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        log_tail: String,
    },
    /// An address file a process wrote does not say what we expect.
    #[error("{}: unexpected address file content: {content:?}", path.display())]
    AddrFile {
        /// The file.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
}

impl Error {
    /// An [`Error::Io`] saying what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { what: what.into(), source }
    }
}

/// Adds "what was being done" to I/O results.
pub(crate) trait IoContext<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}
