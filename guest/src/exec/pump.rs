//! Moves a process's output from a pipe or pty into the execution's output ring.
//!
//! Space is reserved in the ring before each read, so a ring that the host does not drain stops the reading and the
//! process blocks on its full pipe: back-pressure, never loss. After the process has exited the pump keeps reading
//! until EOF, but gives up once the stream has been idle for [`IDLE_AFTER_EXIT`] (a background descendant may keep the
//! pipe open forever).

use std::os::fd::OwnedFd;
use std::time::Duration;

use boxyard_proto::agent::Stream;
use tokio::sync::watch;

use super::output::OutputRing;

/// How long a stream may stay silent after the process exited before the pump stops waiting for EOF.
pub const IDLE_AFTER_EXIT: Duration = Duration::from_secs(1);
const READ_SIZE: usize = 64 * 1024;

pub async fn pump(fd: OwnedFd, stream: Stream, ring: &OutputRing, mut exited: watch::Receiver<bool>) {
    let Ok(fd) = crate::fd::register(fd) else { return };
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        let room = ring.reserve().await.min(READ_SIZE);
        if room == 0 {
            return;
        }
        let mut guard = if *exited.borrow() {
            match tokio::time::timeout(IDLE_AFTER_EXIT, fd.readable()).await {
                Ok(Ok(g)) => g,
                _ => return,
            }
        } else {
            tokio::select! {
                g = fd.readable() => match g { Ok(g) => g, Err(_) => return },
                _ = exited.changed() => continue,
            }
        };
        match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), &mut buf[..room]).map_err(std::io::Error::from)) {
            Ok(Ok(0)) => return,
            Ok(Ok(n)) => ring.append(stream, &buf[..n]),
            // EIO: the pty's last slave closed (the terminal's EOF).
            Ok(Err(_)) => return,
            Err(_would_block) => continue,
        }
    }
}
