//! Registering owned file descriptors with the tokio reactor.

use std::os::fd::OwnedFd;

use tokio::io::unix::AsyncFd;

/// Registers a non-blocking descriptor for readiness events.
pub fn register(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open for its whole lifetime and always reports the same descriptor.
    unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)
}
