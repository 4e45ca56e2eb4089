//! The virtio-rng device: one request queue, no features, no config space.

use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use super::event_handler::RngHandler;
use crate::devices::virtio::event_loop::Worker;
use crate::devices::virtio::{ActivateError, DeviceQueue, Interrupt, TYPE_RNG, VirtioDevice};

/// Size of the request queue.
pub const QUEUE_SIZE: u16 = 64;

/// A virtio-rng device.
#[derive(Default)]
pub struct Rng {
    worker: Option<Worker>,
}

impl Rng {
    /// A new device.
    pub fn new() -> Self {
        Self::default()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        mut queues: Vec<DeviceQueue>,
        _features: u64,
    ) -> Result<(), ActivateError> {
        if queues.len() != 1 {
            return Err(ActivateError::QueueCount { expected: 1, got: queues.len() });
        }
        let q = queues.remove(0);
        self.worker = Some(Worker::spawn("virtio-rng", RngHandler { queue: q.queue, event: q.event, mem, interrupt })?);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker = None;
    }
}
