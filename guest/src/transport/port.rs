//! Sessions on the virtio-serial port `boxyard.agent`.
//!
//! The port is one byte pipe whose host end comes and goes (QEMU's chardev socket: the runner connects, dies,
//! reconnects). The guest driver reports the host's absence as EOF on read and as a hang-up in poll. One session runs
//! at a time: when it ends (EOF, error), the port returns to the handshake and waits for the next HELLO. While the
//! host is away, reads return EOF immediately, so the handshake loop sleeps briefly between attempts.
//!
//! Every session registers its own duplicate of the port's descriptor with the reactor, and a session ends as soon as
//! its registration has seen the host hang up, even if the host is back by the time the session looks again. Two
//! reasons: the host connection the session was talking to is gone (a new one must say HELLO first), and tokio
//! treats a hang-up as final for a registration (the "closed" readiness is never cleared), so a session that kept
//! going after one would find the port "ready" forever, get EAGAIN, and spin inside one poll without ever yielding.
//! Bytes still queued on the port are left for the next handshake, which discards anything before a HELLO.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use boxyard_proto::session::{HandshakeError, server_handshake};
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::oneshot;

const HOST_AWAY_POLL: Duration = Duration::from_millis(20);

/// Finds the device node of the virtio-serial port with this name.
pub fn find_port(name: &str) -> Option<PathBuf> {
    let dir = std::fs::read_dir("/sys/class/virtio-ports").ok()?;
    for entry in dir.flatten() {
        let Ok(n) = std::fs::read_to_string(entry.path().join("name")) else {
            continue;
        };
        if n.trim() == name {
            return Some(Path::new("/dev").join(entry.file_name()));
        }
    }
    None
}

/// One session on the port. Dropping it lets the next session start.
pub struct PortSession {
    fd: AsyncFd<OwnedFd>,
    /// The handshake completed: a hang-up is worth a debug message.
    established: bool,
    /// The host went away: reads return EOF and writes fail from now on.
    hung_up: bool,
    _done: Option<oneshot::Sender<()>>,
}

impl tonic::transport::server::Connected for PortSession {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl PortSession {
    /// Marks the session over because the host went away; `how` says where it was noticed.
    fn host_left(&mut self, how: &str) {
        if self.established && !self.hung_up {
            crate::debug!("agent port: host went away ({how})");
        }
        self.hung_up = true;
    }
}

impl AsyncRead for PortSession {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        loop {
            if self.hung_up {
                return Poll::Ready(Ok(()));
            }
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            if guard.ready().is_read_closed() {
                drop(guard);
                self.host_left("hang-up seen while reading");
                continue;
            }
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| nix::unistd::read(fd.get_ref(), unfilled).map_err(std::io::Error::from)) {
                Ok(Ok(0)) => {
                    drop(guard);
                    self.host_left("EOF");
                }
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PortSession {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        loop {
            if self.hung_up {
                return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
            }
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            if guard.ready().is_write_closed() {
                drop(guard);
                self.host_left("hang-up seen while writing");
                continue;
            }
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), data).map_err(std::io::Error::from)) {
                Ok(r) => return Poll::Ready(r),
                // The readiness was cleared; the next poll waits for the port to drain (or for the host to leave).
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Yields one handshaken session at a time, forever.
pub fn sessions(device: &Path) -> std::io::Result<impl futures::Stream<Item = std::io::Result<PortSession>> + use<>> {
    // Held open for the agent's lifetime, so the host always sees the guest side connected.
    let port = open(device, OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY, Mode::empty())?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            let (done_tx, done_rx) = oneshot::channel();
            let fd = match port.try_clone().and_then(crate::fd::register) {
                Ok(fd) => fd,
                Err(e) => {
                    eprintln!("boxyard-guest: agent port: cannot register the port: {e}");
                    tokio::time::sleep(HOST_AWAY_POLL).await;
                    continue;
                }
            };
            let mut session = PortSession { fd, established: false, hung_up: false, _done: Some(done_tx) };
            match server_handshake(&mut session).await {
                Ok(_) => {
                    session.established = true;
                    crate::debug!("agent port: session started");
                    if tx.send(Ok(session)).await.is_err() {
                        return;
                    }
                    // Wait until the server drops the session before reading the port again.
                    let _ = done_rx.await;
                    crate::debug!("agent port: session ended");
                }
                Err(HandshakeError::Closed) => tokio::time::sleep(HOST_AWAY_POLL).await,
                Err(e) => {
                    eprintln!("boxyard-guest: agent port: {e}");
                    tokio::time::sleep(HOST_AWAY_POLL).await;
                }
            }
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}
