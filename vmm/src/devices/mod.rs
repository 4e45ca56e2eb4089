//! Every device of the VM: the legacy port-I/O devices ([`legacy`]) and the virtio devices with their virtio-mmio
//! transport ([`virtio`]).

pub mod legacy;
pub mod virtio;
