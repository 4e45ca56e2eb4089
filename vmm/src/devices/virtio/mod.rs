//! Virtio devices and their virtio-mmio transport.
//!
//! Each device has its own folder with the same parts, as Firecracker lays out `devices/virtio/<device>/`:
//! `device.rs` (the [`VirtioDevice`] state machine: features, config space, activation), the queue handling (pure
//! functions of a queue, guest memory and the backend, unit-tested with hand-built descriptor chains),
//! `event_handler.rs` (the worker thread's epoll glue) and `tests.rs`. The transport ([`mmio`]) owns the registers
//! and the queues until the driver sets DRIVER_OK, then hands the queues to the device, whose worker thread serves
//! them: guest notifications arrive as eventfds (KVM ioeventfds on the QueueNotify register) and interrupts leave
//! through an irqfd, so device I/O never runs on a vCPU thread.

pub mod block;
pub mod console;
pub mod event_loop;
#[cfg(test)]
mod fuzz_tests;
pub mod mmio;
pub mod rng;
#[cfg(test)]
pub mod test_utils;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub use virtio_queue::{Queue, QueueT};

/// Device type of virtio-blk.
pub const TYPE_BLOCK: u32 = 2;
/// Device type of virtio-console.
pub const TYPE_CONSOLE: u32 = 3;
/// Device type of virtio-rng (entropy).
pub const TYPE_RNG: u32 = 4;

/// Feature bit: the device follows virtio 1.x (required for the mmio transport version 2).
pub const F_VERSION_1: u64 = 1 << 32;

/// Interrupt status bit: a queue has new used buffers.
pub const INT_USED_RING: u32 = 1;
/// Interrupt status bit: the configuration changed.
pub const INT_CONFIG: u32 = 2;

/// The device's interrupt line: the status register the transport exposes and the irqfd behind it.
pub struct Interrupt {
    status: AtomicU32,
    irqfd: EventFd,
}

impl Interrupt {
    /// An interrupt raised through `irqfd`.
    pub fn new(irqfd: EventFd) -> Self {
        Self { status: AtomicU32::new(0), irqfd }
    }

    /// Tells the driver a queue has used buffers.
    pub fn signal_used_queue(&self) {
        self.raise(INT_USED_RING);
    }

    /// Tells the driver the configuration changed.
    pub fn signal_config(&self) {
        self.raise(INT_CONFIG);
    }

    fn raise(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        // A failed eventfd write (counter overflow) means an interrupt is already pending.
        let _ = self.irqfd.write(1);
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears the acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The irqfd (for tests and registration).
    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }
}

/// A queue handed to a device at activation, with the eventfd the guest's notifications arrive on.
pub struct DeviceQueue {
    /// The queue, configured by the driver.
    pub queue: Queue,
    /// Becomes readable when the driver notifies this queue.
    pub event: EventFd,
}

/// Errors activating a device.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver configured a different number of queues than the device needs.
    #[error("expected {expected} queues, got {got}")]
    QueueCount {
        /// Queues the device needs.
        expected: usize,
        /// Queues given.
        got: usize,
    },
    /// The worker thread or its resources could not be created.
    #[error("starting the device worker: {0}")]
    Io(#[from] std::io::Error),
}

/// What every virtio device implements for the transport.
pub trait VirtioDevice: Send {
    /// The virtio device type.
    fn device_type(&self) -> u32;
    /// The maximum size of each of its queues (their number is the device's queue count).
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// The features the device offers.
    fn features(&self) -> u64;
    /// Reads its configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes its configuration space (ignored by default: the config of our devices is read-only).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts serving `queues` with the features the driver accepted.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        queues: Vec<DeviceQueue>,
        features: u64,
    ) -> Result<(), ActivateError>;
    /// Stops serving the queues (device reset by the driver); the device can be activated again afterwards.
    fn reset(&mut self);
}

/// Reads `data.len()` bytes at `offset` of a config space held as bytes; out-of-range bytes read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset).ok().and_then(|o| config.get(o + i)).copied().unwrap_or(0);
    }
}
