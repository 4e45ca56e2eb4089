//! The Boxyard runner: boots box VMs and runs executions in them, keeping every output byte durable.
//!
//! - [`service`]: the runner's gRPC API (TLS), a thin layer over [`boxes`].
//! - [`boxes`]: box lifecycle, executions, recovery after a runner restart.
//! - [`executions`]: one execution: its output pump (guest → log), attach readers, result.
//! - [`execlog`]: the durable, cursor-addressed execution output log.
//! - [`vm`]: the VM backend seam (one trait) and its backends (QEMU; `local` for tests; our own KVM VMM later).
//! - [`agent`]: the host side of the guest agent channel (session handshake, gRPC client, resumable output).
//! - [`launch`]: boot a VM and connect to its agent, with one deadline.
//! - [`metrics`]: `/metrics` (Prometheus), computed from the inventory at scrape time.
//! - [`registration`]: joining a control plane (join token, heartbeats, the API token it must present).
//! - [`snapshots`]: snapshot images fetched from S3, verified, cached and shared by boxes.
//! - [`hostcaps`]: what this host can do (hardware virtualization). [`disk`]: per-box writable disks.
//! - [`config`], [`error`], [`store`] (atomic state files), [`paths`] (the state directory's layout), [`client`] (a TLS
//!   client of the runner API).

#![warn(missing_docs)]

pub mod agent;
pub mod boxes;
pub mod cleanup;
pub mod client;
pub mod config;
pub mod disk;
pub mod error;
pub mod execlog;
pub mod executions;
pub mod hostcaps;
pub mod launch;
pub mod metrics;
pub mod paths;
pub mod registration;
pub mod service;
pub mod snapshots;
pub mod storage;
pub mod store;
pub mod version;
pub mod vm;
