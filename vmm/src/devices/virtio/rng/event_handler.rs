//! The virtio-rng worker: fills buffers when the guest notifies the queue.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::request::process_queue;
use crate::devices::virtio::event_loop::Handler;
use crate::devices::virtio::{Interrupt, Queue};

/// The state the worker thread owns.
pub struct RngHandler {
    /// The request queue.
    pub queue: Queue,
    /// Its notification eventfd.
    pub event: EventFd,
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The device's interrupt.
    pub interrupt: Arc<Interrupt>,
}

impl Handler for RngHandler {
    fn sources(&self) -> Vec<(RawFd, u64, EventSet)> {
        vec![(self.event.as_raw_fd(), 0, EventSet::IN)]
    }

    fn ready(&mut self, _token: u64, _events: EventSet) -> Vec<(RawFd, u64, Option<EventSet>)> {
        let _ = self.event.read();
        if process_queue(&mut self.queue, &self.mem) {
            self.interrupt.signal_used_queue();
        }
        vec![]
    }
}
