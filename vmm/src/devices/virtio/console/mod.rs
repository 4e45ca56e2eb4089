//! virtio-console (multiport): the guest agent's channel. Not implemented in this commit: [`Console::new`] refuses.

use std::path::Path;
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use super::{ActivateError, DeviceQueue, Interrupt, TYPE_CONSOLE, VirtioDevice};

/// The port name the guest agent looks for.
pub const AGENT_PORT_NAME: &str = "boxyard.agent";

/// The agent channel device.
pub struct Console;

impl Console {
    /// Not implemented yet.
    pub fn new(_socket: &Path, _name: &str) -> std::io::Result<Self> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "the virtio-console agent channel is not implemented yet",
        ))
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        TYPE_CONSOLE
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![]
    }
    fn features(&self) -> u64 {
        0
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0)
    }
    fn activate(
        &mut self,
        _mem: GuestMemoryMmap,
        _interrupt: Arc<Interrupt>,
        _queues: Vec<DeviceQueue>,
        _features: u64,
    ) -> Result<(), ActivateError> {
        Ok(())
    }
    fn reset(&mut self) {}
}
