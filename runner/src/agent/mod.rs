//! The host side of the guest agent channel.
//!
//! [`connect`] opens a gRPC channel to an agent over its unix socket (QEMU's end of the virtio-serial port, or the
//! local backend's socket), running the session handshake on every (re)connection. `output` follows one
//! execution's output from a cursor and survives the channel being cut: the caller keeps its cursor and calls again.

mod output;

use std::path::{Path, PathBuf};
use std::sync::PoisonError;
use std::time::Duration;

use boxyard_proto::agent::agent_client::AgentClient;
use boxyard_proto::session::{HandshakeError, client_handshake};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

pub use output::{Collected, OutputEvent, OutputFollower, collect};

/// A gRPC client of one guest agent.
pub type Agent = AgentClient<Channel>;

/// Awaits one call to the agent for at most `timeout`: a guest that hangs while connected (its VM frozen, its agent
/// stuck) answers nothing, and the call fails with DEADLINE_EXCEEDED saying so instead of waiting forever.
pub async fn call<T>(
    timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(tonic::Status::deadline_exceeded(format!("no answer from the guest agent within {timeout:?}"))),
    }
}

/// How long the first handshake attempt waits for the agent's READY; later attempts double it up to the maximum.
///
/// A HELLO can be lost when it reaches the agent while an old session of it is still ending (the old session reads it
/// as HTTP/2 and fails); then only a new attempt helps, so the first wait is short. A booting VM holds the HELLO until
/// its agent opens the port, which the doubling waits out.
const HANDSHAKE_FIRST_TIMEOUT: Duration = Duration::from_millis(500);
const HANDSHAKE_MAX_TIMEOUT: Duration = Duration::from_secs(4);

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The agent did not complete a session handshake in time.
    #[error("the guest agent at {path} did not become ready within {timeout:?}: {last}")]
    Timeout {
        /// The agent's socket.
        path: PathBuf,
        /// How long it was given.
        timeout: Duration,
        /// The last attempt's error.
        last: String,
    },
    /// The gRPC channel could not be set up.
    #[error("cannot open a gRPC channel to the guest agent: {0}")]
    Channel(#[from] tonic::transport::Error),
}

/// Opens a unix socket and completes the session handshake, retrying until `deadline`.
async fn open_session(path: &Path, deadline: tokio::time::Instant) -> Result<UnixStream, String> {
    let mut last;
    let mut attempt_timeout = HANDSHAKE_FIRST_TIMEOUT;
    loop {
        match UnixStream::connect(path).await {
            Ok(mut s) => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match client_handshake(&mut s, attempt_timeout.min(left.max(Duration::from_millis(10)))).await {
                    Ok(_) => return Ok(s),
                    Err(e @ HandshakeError::Timeout(_)) => {
                        last = e.to_string();
                        attempt_timeout = (attempt_timeout * 2).min(HANDSHAKE_MAX_TIMEOUT);
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = format!("connect {}: {e}", path.display()),
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connects to the agent at `path`, waiting up to `timeout` for it to become ready (a VM that is still booting).
///
/// The returned client reconnects by itself (with a fresh handshake) when the channel breaks.
pub async fn connect(path: &Path, timeout: Duration) -> Result<Agent, ConnectError> {
    let deadline = tokio::time::Instant::now() + timeout;
    // The first session is opened here so that "not ready in time" is reported clearly; later reconnections use
    // the connector below with a shorter budget.
    let first = open_session(path, deadline).await.map_err(|last| ConnectError::Timeout {
        path: path.to_path_buf(),
        timeout,
        last,
    })?;
    let first = std::sync::Arc::new(std::sync::Mutex::new(Some(first)));
    let path = path.to_path_buf();
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let path = path.clone();
        let first = first.clone();
        async move {
            if let Some(s) = first.lock().unwrap_or_else(PoisonError::into_inner).take() {
                return Ok::<_, std::io::Error>(TokioIo::new(s));
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            open_session(&path, deadline).await.map(TokioIo::new).map_err(std::io::Error::other)
        }
    });
    let channel = Endpoint::from_static("http://boxyard-agent")
        .connect_timeout(Duration::from_secs(15))
        .connect_with_connector(connector)
        .await?;
    Ok(AgentClient::new(channel).max_decoding_message_size(16 << 20).max_encoding_message_size(16 << 20))
}
