//! The virtio-blk worker: on each queue notification it serves every available request and interrupts the driver
//! once if any completed.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use super::request::{Disk, process_queue};
use crate::devices::virtio::event_loop::Handler;
use crate::devices::virtio::{Interrupt, Queue};

/// The state the worker thread owns.
pub struct BlockHandler {
    /// The request queue.
    pub queue: Queue,
    /// Its notification eventfd.
    pub event: EventFd,
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The disk.
    pub disk: Arc<Mutex<Disk>>,
    /// The device's interrupt.
    pub interrupt: Arc<Interrupt>,
}

impl Handler for BlockHandler {
    fn sources(&self) -> Vec<(RawFd, u64, EventSet)> {
        vec![(self.event.as_raw_fd(), 0, EventSet::IN)]
    }

    fn ready(&mut self, _token: u64, _events: EventSet) -> Vec<(RawFd, u64, Option<EventSet>)> {
        let _ = self.event.read();
        let mut disk = self.disk.lock().unwrap_or_else(|e| e.into_inner());
        if process_queue(&mut self.queue, &self.mem, &mut disk) {
            self.interrupt.signal_used_queue();
        }
        vec![]
    }
}
