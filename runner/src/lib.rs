//! The Boxyard runner: boots box VMs and runs executions in them.
//!
//! - [`vm`]: the VM backend seam (one trait) and its backends (QEMU now; our own KVM VMM later).
//! - [`agent`]: the host side of the guest agent channel (session handshake, gRPC client, resumable output).
//! - [`hostcaps`]: what this host can do (hardware virtualization).
//! - [`disk`]: per-box writable disks.

pub mod agent;
pub mod disk;
pub mod execlog;
pub mod hostcaps;
pub mod launch;
pub mod vm;
