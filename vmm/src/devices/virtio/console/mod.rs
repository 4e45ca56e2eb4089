//! virtio-console with the multiport feature: the guest agent's channel, a named port (`boxyard.agent`) whose host
//! end is a unix socket the VMM listens on (one connection at a time, like QEMU's `chardev socket,server=on`).
//!
//! Why virtio-console rather than Firecracker-style hybrid vsock: the guest agent already speaks over a named
//! virtio-serial port with QEMU (it finds `/sys/class/virtio-ports/*/name == boxyard.agent` and treats "host not
//! connected" as EOF), so both backends give the agent the same channel, and the runner's agent client is unchanged
//! (it connects to `agent.sock` either way).
//!
//! - [`control`]: the control messages (PORT_ADD, PORT_NAME, PORT_OPEN, ...);
//! - [`ports`]: the device side of the six queues (control in/out, the agent port's rx/tx), without any socket;
//! - [`device`]: the device state machine (features, config, activation);
//! - [`event_handler`]: the worker thread joining the queues to the unix socket.

pub mod control;
pub mod device;
pub mod event_handler;
pub mod ports;
#[cfg(test)]
mod tests;

pub use device::Console;

/// The port name the guest agent looks for.
pub const AGENT_PORT_NAME: &str = "boxyard.agent";
