//! virtio-rng: fills the guest's buffers from the host's `getrandom`, so the guest kernel's entropy pool is seeded
//! early.
//!
//! - [`device`]: the device state machine (no features, no config);
//! - [`request`]: filling the writable buffers of each chain;
//! - [`event_handler`]: the worker thread.

pub mod device;
pub mod event_handler;
pub mod request;
#[cfg(test)]
mod tests;

pub use device::Rng;
