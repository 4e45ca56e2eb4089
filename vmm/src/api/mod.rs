//! The control socket: how the runner (or an operator with `socat`) asks a running VMM to pause, resume, stop
//! gracefully, die, or report its status and counters.
//!
//! The protocol is one JSON object per line each way over a unix stream socket ([`protocol`]): a request
//! `{"op": "status"}`, an answer `{"ok": true, ...}` or `{"ok": false, "error": {"code": ..., "message": ...}}`.
//! A connection may carry any number of requests, answered in order. [`server`] accepts connections on its own
//! thread and hands each request to the VMM's main thread, which alone applies them to the VM
//! ([`controller::Controller`]), so requests never race each other.

pub mod controller;
pub mod protocol;
pub mod server;

pub use controller::Controller;
pub use protocol::{ApiRequest, ErrorCode};
pub use server::ControlServer;
