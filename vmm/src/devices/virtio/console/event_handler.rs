//! The console worker: joins the agent port's queues to the host's unix socket.
//!
//! One host connection at a time; while one is open the listener is not watched, so further clients wait in the
//! backlog. Host → guest bytes are read into a bounded buffer only when it is empty, and the socket is not watched
//! while the guest has no receive buffers for what was read (backpressure to the host). Guest → host bytes are
//! written without blocking; while a remainder is pending, no further chain is taken from the guest (backpressure
//! to the guest). A hang-up drops the connection, tells the guest the host end closed, and listens again.
//!
//! Clients that gave up while waiting in the backlog are skipped when accepting ([`accept_live`]): the runner
//! connects as soon as the socket exists, long before the guest opens the port, and retries with a fresh connection
//! each time its handshake times out (0.5 s, doubling to 4 s). Serving those dead connections first, one guest
//! round trip each, kept the live one waiting until its own attempt timed out: seconds of boot as the runner sees
//! it.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::ports::{NUM_QUEUES, Ports};
use crate::devices::virtio::Interrupt;
use crate::devices::virtio::event_loop::Handler;

/// Accepts the first queued connection whose client is still there; connections whose client already closed its
/// end (`POLLHUP`: both directions shut) are closed unserved. `None` when no live connection is waiting (the
/// listener is non-blocking).
pub fn accept_live(listener: &UnixListener) -> std::io::Result<Option<UnixStream>> {
    loop {
        let s = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut pfd = libc::pollfd { fd: s.as_raw_fd(), events: 0, revents: 0 };
        // SAFETY: one valid pollfd, zero timeout.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        if n == 1 && pfd.revents & libc::POLLHUP != 0 {
            continue;
        }
        return Ok(Some(s));
    }
}

const LISTENER: u64 = 100;
const CONNECTION: u64 = 101;
const RX_BUF: usize = 64 * 1024;

/// The state the worker thread owns.
pub struct ConsoleHandler {
    ports: Ports,
    events: Vec<EventFd>,
    listener: UnixListener,
    conn: Option<UnixStream>,
    /// A connection that ended, kept open until epoll has forgotten it (its descriptor number must not be reused
    /// by the next connection while epoll still watches it).
    closing: Option<UnixStream>,
    to_guest: Vec<u8>,
    to_host: Vec<u8>,
    interrupt: Arc<Interrupt>,
    /// What epoll currently watches for the connection / whether the listener is watched.
    conn_interest: Option<EventSet>,
    listening: bool,
}

impl ConsoleHandler {
    /// A handler for the activated queues (with their notification eventfds) and the host socket.
    pub fn new(ports: Ports, events: Vec<EventFd>, listener: UnixListener, interrupt: Arc<Interrupt>) -> Self {
        Self {
            ports,
            events,
            listener,
            conn: None,
            closing: None,
            to_guest: Vec::new(),
            to_host: Vec::new(),
            interrupt,
            conn_interest: None,
            listening: true,
        }
    }

    fn disconnect(&mut self) {
        self.closing = self.conn.take();
        self.to_guest.clear();
        self.to_host.clear();
        self.ports.set_host_connected(false);
    }

    fn accept(&mut self) {
        match accept_live(&self.listener) {
            Ok(Some(s)) => {
                if s.set_nonblocking(true).is_ok() {
                    self.conn = Some(s);
                    self.ports.set_host_connected(true);
                }
            }
            Ok(None) => {}
            Err(e) => eprintln!("boxyard-vmm: agent socket accept: {e}"),
        }
    }

    fn read_host(&mut self) {
        let Some(c) = self.conn.as_mut() else { return };
        if !self.to_guest.is_empty() {
            return;
        }
        let mut buf = vec![0u8; RX_BUF];
        match c.read(&mut buf) {
            Ok(0) => self.disconnect(),
            Ok(n) => {
                crate::metrics::METRICS.agent_bytes_to_guest.add(n as u64);
                self.to_guest.extend_from_slice(&buf[..n]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
            Err(_) => self.disconnect(),
        }
    }

    /// Moves bytes both ways as far as buffers allow; returns whether the guest needs an interrupt.
    fn pump(&mut self) -> bool {
        let mut used = self.ports.process_control();
        used |= self.ports.drain_unused();
        // Guest → host.
        loop {
            if !self.to_host.is_empty() {
                let Some(c) = self.conn.as_mut() else {
                    self.to_host.clear();
                    continue;
                };
                match c.write(&self.to_host) {
                    Ok(n) => {
                        crate::metrics::METRICS.agent_bytes_to_host.add(n as u64);
                        self.to_host.drain(..n);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => break,
                    Err(_) => {
                        self.disconnect();
                        continue;
                    }
                }
                if !self.to_host.is_empty() {
                    break;
                }
            }
            match self.ports.take_tx() {
                Some(bytes) => {
                    used = true;
                    if self.conn.is_some() {
                        self.to_host = bytes;
                    }
                }
                None => break,
            }
        }
        // Host → guest.
        if !self.to_guest.is_empty() {
            let (n, u) = self.ports.fill_rx(&self.to_guest);
            self.to_guest.drain(..n);
            used |= u;
        }
        // Disconnect/connect messages queued above reach the driver now.
        used |= self.ports.process_control();
        used
    }

    fn interest_changes(&mut self) -> Vec<(RawFd, u64, Option<EventSet>)> {
        let mut changes = Vec::new();
        let want_listen = self.conn.is_none();
        if want_listen != self.listening {
            self.listening = want_listen;
            changes.push((self.listener.as_raw_fd(), LISTENER, want_listen.then_some(EventSet::IN)));
        }
        let want = self.conn.as_ref().map(|_| {
            let mut s = EventSet::empty();
            if self.to_guest.is_empty() && self.ports.guest_open() {
                s |= EventSet::IN;
            }
            if !self.to_host.is_empty() {
                s |= EventSet::OUT;
            }
            s
        });
        if let Some(old) = &self.closing
            && self.conn_interest.is_some()
        {
            changes.push((old.as_raw_fd(), CONNECTION, None));
            self.conn_interest = None;
        }
        if want != self.conn_interest {
            if let (Some(c), Some(set)) = (&self.conn, want) {
                changes.push((c.as_raw_fd(), CONNECTION, Some(set)));
            }
            self.conn_interest = want;
        }
        changes
    }
}

impl Handler for ConsoleHandler {
    fn sources(&self) -> Vec<(RawFd, u64, EventSet)> {
        let mut s: Vec<_> =
            self.events.iter().enumerate().map(|(i, e)| (e.as_raw_fd(), i as u64, EventSet::IN)).collect();
        s.push((self.listener.as_raw_fd(), LISTENER, EventSet::IN));
        s
    }

    fn ready(&mut self, token: u64, events: EventSet) -> Vec<(RawFd, u64, Option<EventSet>)> {
        // Epoll forgot the previous connection when the last call's changes were applied.
        self.closing = None;
        match token {
            t if (t as usize) < NUM_QUEUES => {
                let _ = self.events[t as usize].read();
            }
            LISTENER => self.accept(),
            CONNECTION => {
                if events.contains(EventSet::IN) {
                    self.read_host();
                } else if events.intersects(EventSet::HANG_UP | EventSet::ERROR) {
                    self.disconnect();
                }
            }
            _ => {}
        }
        if self.pump() {
            self.interrupt.signal_used_queue();
        }
        self.interest_changes()
    }
}
