//! Boxyard's wire protocols.
//!
//! - [`agent`]: the guest agent gRPC API (generated from `proto/boxyard/agent/v1/agent.proto`).
//! - [`runner`]: the runner gRPC API (`proto/boxyard/runner/v1/runner.proto`).
//! - [`registry`]: the runner registry the control plane serves (`proto/boxyard/registry/v1/registry.proto`).
//! - [`session`]: the handshake that starts every host↔agent session on a byte pipe that can be cut and reopened
//!   (a virtio-serial port), so that neither side ever mistakes stale bytes of an old session for a new one.
//! - [`signal`]: signal names as they travel on the wire.

pub mod session;
pub mod signal;

/// The guest agent API, version 1.
pub mod agent {
    tonic::include_proto!("boxyard.agent.v1");
}

/// The runner API, version 1 (control plane → runner).
pub mod runner {
    tonic::include_proto!("boxyard.runner.v1");
}

/// The runner registry, version 1 (runner → control plane).
pub mod registry {
    tonic::include_proto!("boxyard.registry.v1");
}

/// The name of the virtio-serial port the agent serves on (host side: a unix socket).
pub const AGENT_PORT_NAME: &str = "boxyard.agent";
