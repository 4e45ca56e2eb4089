//! The virtio-blk device: features (read-only, flush, segment limit), the config space (capacity, seg_max) and
//! activation, which starts the queue worker.

use std::sync::{Arc, Mutex};

use vm_memory::GuestMemoryMmap;

use super::event_handler::BlockHandler;
use super::request::Disk;
use crate::devices::virtio::event_loop::Worker;
use crate::devices::virtio::{ActivateError, DeviceQueue, Interrupt, TYPE_BLOCK, VirtioDevice, read_config_bytes};

/// Feature: `seg_max` in the config space is valid.
pub const F_SEG_MAX: u64 = 1 << 2;
/// Feature: the disk is read-only.
pub const F_RO: u64 = 1 << 5;
/// Feature: the device accepts FLUSH.
pub const F_FLUSH: u64 = 1 << 9;
/// Size of the one request queue.
pub const QUEUE_SIZE: u16 = 256;

/// A virtio-blk device.
pub struct Block {
    disk: Arc<Mutex<Disk>>,
    worker: Option<Worker>,
}

impl Block {
    /// A device serving `disk`.
    pub fn new(disk: Disk) -> Self {
        Self { disk: Arc::new(Mutex::new(disk)), worker: None }
    }

    fn config(&self) -> [u8; 16] {
        let disk = self.disk.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = [0u8; 16];
        c[0..8].copy_from_slice(&disk.sectors().to_le_bytes());
        // size_max (unused without VIRTIO_BLK_F_SIZE_MAX), then seg_max: a chain is header + data + status.
        c[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
        c
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let ro = self.disk.lock().unwrap_or_else(|e| e.into_inner()).read_only();
        F_SEG_MAX | F_FLUSH | if ro { F_RO } else { 0 }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
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
        let handler = BlockHandler { queue: q.queue, event: q.event, mem, disk: self.disk.clone(), interrupt };
        self.worker = Some(Worker::spawn("virtio-blk", handler)?);
        Ok(())
    }

    fn reset(&mut self) {
        self.worker = None;
    }
}
