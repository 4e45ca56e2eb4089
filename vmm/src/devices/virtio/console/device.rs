//! The virtio-console device: the multiport feature, the config space (`max_nr_ports` = 2) and activation, which
//! starts the worker joining the queues to the host socket. The socket is bound when the device is created, so a
//! client can connect before the guest driver is up (it then sees the port open as soon as the guest sets it up).

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use super::event_handler::ConsoleHandler;
use super::ports::{MAX_PORTS, NUM_QUEUES, Ports};
use crate::devices::virtio::event_loop::Worker;
use crate::devices::virtio::{ActivateError, DeviceQueue, Interrupt, TYPE_CONSOLE, VirtioDevice, read_config_bytes};

/// Feature: multiple named ports with a control queue pair.
pub const F_MULTIPORT: u64 = 1 << 1;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 128;

/// The agent channel device.
pub struct Console {
    listener: UnixListener,
    path: PathBuf,
    name: String,
    worker: Option<Worker>,
}

impl Console {
    /// Listens on `socket` (a stale socket file is replaced) for the port named `name`.
    pub fn new(socket: &Path, name: &str) -> std::io::Result<Self> {
        match std::fs::remove_file(socket) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let listener = UnixListener::bind(socket)?;
        listener.set_nonblocking(true)?;
        Ok(Self { listener, path: socket.into(), name: name.into(), worker: None })
    }

    /// A second handle on the listening socket (for tests driving the worker without a transport).
    #[cfg(test)]
    pub fn listener_clone(&self) -> std::io::Result<UnixListener> {
        self.listener.try_clone()
    }

    /// The socket's path.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        TYPE_CONSOLE
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; NUM_QUEUES]
    }

    fn features(&self) -> u64 {
        F_MULTIPORT
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // cols u16, rows u16, max_nr_ports u32, emerg_wr u32.
        let mut c = [0u8; 12];
        c[4..8].copy_from_slice(&MAX_PORTS.to_le_bytes());
        read_config_bytes(&c, offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        queues: Vec<DeviceQueue>,
        _features: u64,
    ) -> Result<(), ActivateError> {
        if queues.len() != NUM_QUEUES {
            return Err(ActivateError::QueueCount { expected: NUM_QUEUES, got: queues.len() });
        }
        let events = queues.iter().map(|q| q.event.try_clone()).collect::<Result<Vec<_>, _>>()?;
        let ports = Ports::from_device_queues(mem, queues, &self.name);
        let handler = ConsoleHandler::new(ports, events, self.listener.try_clone()?, interrupt);
        self.worker = Some(Worker::spawn("virtio-console", handler)?);
        Ok(())
    }

    fn reset(&mut self) {
        // Dropping the worker drops the host connection too: the client sees EOF and reconnects.
        self.worker = None;
    }
}
