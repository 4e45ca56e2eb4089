//! The worker-thread glue shared by the virtio devices: one thread per activated device, blocking in epoll on the
//! device's queue eventfds, its backend descriptors and a stop eventfd. The device-specific part is a [`Handler`].

use std::os::fd::RawFd;
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

/// Token of the stop eventfd.
const STOP_TOKEN: u64 = u64::MAX;

/// The device-specific part of a worker.
pub trait Handler: Send + 'static {
    /// Descriptors to watch at start, with their tokens and events.
    fn sources(&self) -> Vec<(RawFd, u64, EventSet)>;
    /// Handles readiness of the source `token`. Returns changes to the watched set: `(fd, token, Some(events))` to add
    /// or modify, `(fd, token, None)` to remove.
    fn ready(&mut self, token: u64, events: EventSet) -> Vec<(RawFd, u64, Option<EventSet>)>;
}

/// A running worker; dropping it stops the thread and waits for it.
pub struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts a thread named `name` serving `handler`.
    pub fn spawn<H: Handler>(name: &str, mut handler: H) -> std::io::Result<Self> {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        epoll.ctl(ControlOperation::Add, stop.as_raw_fd(), EpollEvent::new(EventSet::IN, STOP_TOKEN))?;
        let mut watched = std::collections::HashSet::new();
        for (fd, token, ev) in handler.sources() {
            epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(ev, token))?;
            watched.insert(fd);
        }
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || {
            let mut events = vec![EpollEvent::default(); 16];
            loop {
                let n = match epoll.wait(-1, &mut events) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        eprintln!("boxyard-vmm: device worker epoll: {e}");
                        return;
                    }
                };
                for ev in &events[..n] {
                    if ev.data() == STOP_TOKEN {
                        return;
                    }
                    for (fd, token, change) in handler.ready(ev.data(), ev.event_set()) {
                        let r = match change {
                            Some(set) if watched.contains(&fd) => {
                                epoll.ctl(ControlOperation::Modify, fd, EpollEvent::new(set, token))
                            }
                            Some(set) => {
                                watched.insert(fd);
                                epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(set, token))
                            }
                            None => {
                                watched.remove(&fd);
                                epoll.ctl(ControlOperation::Delete, fd, EpollEvent::default())
                            }
                        };
                        if let Err(e) = r {
                            eprintln!("boxyard-vmm: device worker epoll_ctl: {e}");
                        }
                    }
                }
            }
        })?;
        Ok(Self { stop, thread: Some(thread) })
    }
}

use std::os::fd::AsRawFd;

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
