//! virtio-blk: a raw disk image, read-only (the box's root image) or writable (its disk), with flush and the
//! serial the guest agent finds its disks by.
//!
//! - [`device`]: the device state machine (features, config space, activation);
//! - [`request`]: request parsing and execution on one queue, against a [`request::Disk`];
//! - [`event_handler`]: the worker thread that serves the queue when the guest notifies it.

pub mod device;
pub mod event_handler;
pub mod request;
#[cfg(test)]
mod tests;

pub use device::Block;
pub use request::Disk;
